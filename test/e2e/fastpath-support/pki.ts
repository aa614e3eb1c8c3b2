/**
 * Identities for the fast-path suites: a real Sigil CA (controlplane/ca) in a temporary directory,
 * SVIDs it issues (or a second, untrusted CA issues), written as the PEM/JSON files the enforcer
 * process reads.
 */
import { X509Certificate, createPrivateKey } from "node:crypto";
import type { KeyObject } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CertificateAuthority } from "../../../controlplane/ca/authority.ts";
import { generateP256 } from "../../../controlplane/ca/keys.ts";
import type { AttestedLabel } from "../../../core/labels.ts";
import { bundleToJson } from "../../../core/svid/bundle.ts";

export const TRUST_DOMAIN = "sigil.local";

export interface IdentityFiles {
  readonly spiffeId: string;
  readonly svidFile: string;
  readonly keyFile: string;
  readonly chain: Buffer[];
  readonly privateKey: KeyObject;
}

export class TestPki {
  private constructor(
    readonly dir: string,
    readonly ca: CertificateAuthority,
    readonly otherCa: CertificateAuthority,
    readonly bundleFile: string,
  ) {}

  static async create(): Promise<TestPki> {
    const dir = await mkdtemp(join(tmpdir(), "sigil-fastpath-"));
    const ca = await CertificateAuthority.open({ dataDir: join(dir, "ca"), trustDomain: TRUST_DOMAIN });
    // Same trust domain, different key: what a forger with their own CA would present.
    const otherCa = await CertificateAuthority.open({
      dataDir: join(dir, "other-ca"),
      trustDomain: TRUST_DOMAIN,
    });
    const bundleFile = join(dir, "bundle.json");
    await writeFile(bundleFile, bundleToJson(ca.bundle()));
    return new TestPki(dir, ca, otherCa, bundleFile);
  }

  async identity(
    name: string,
    labels: Record<string, string>,
    opts: { untrusted?: boolean; now?: Date; ttlSeconds?: number } = {},
  ): Promise<IdentityFiles> {
    const spiffeId = `spiffe://${TRUST_DOMAIN}/workload/${name}`;
    const { keys, privatePem } = await generateP256();
    const attested: AttestedLabel[] = Object.entries(labels).map(([key, value]) => ({
      key,
      value,
      provenance: "static",
    }));
    const issued = await (opts.untrusted ? this.otherCa : this.ca).issueSvid({
      publicKey: keys.publicKey,
      spiffeId,
      labels: attested,
      ttlSeconds: opts.ttlSeconds ?? 3600,
      ...(opts.now ? { now: opts.now } : {}),
    });
    const svidFile = join(this.dir, `${name}.pem`);
    const keyFile = join(this.dir, `${name}.key`);
    await writeFile(svidFile, issued.chain.map((der) => new X509Certificate(der).toString()).join(""));
    await writeFile(keyFile, privatePem, { mode: 0o600 });
    return {
      spiffeId,
      svidFile,
      keyFile,
      chain: [...issued.chain],
      privateKey: createPrivateKey(privatePem),
    };
  }

  async file(name: string, content: string): Promise<string> {
    const path = join(this.dir, name);
    await writeFile(path, content);
    return path;
  }

  async destroy(): Promise<void> {
    await rm(this.dir, { recursive: true, force: true });
  }
}
