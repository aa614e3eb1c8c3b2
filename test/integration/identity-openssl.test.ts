import { execFile } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CertificateAuthority } from "../../controlplane/ca/authority.ts";
import { bundleRootsPem, bundleToJson, parseBundle } from "../../core/svid/bundle.ts";
import { x509 } from "../../core/svid/x509.ts";
import { generateWorkloadKey } from "../../sidecar/identity/workload-key.ts";

const run = promisify(execFile);
let dir: string;
let ca: CertificateAuthority;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "sigil-openssl-"));
  ca = await CertificateAuthority.open({ dataDir: join(dir, "data") });
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function issueTo(file: string) {
  const key = await generateWorkloadKey();
  const svid = await ca.issueSvid({
    publicKey: key.keys.publicKey,
    spiffeId: "spiffe://sigil.local/workload/payments",
    labels: [{ key: "app", value: "payments", provenance: "join-token" }],
    ttlSeconds: 3600,
  });
  await writeFile(file, svid.chain.map((d) => x509.PemConverter.encode(d, "CERTIFICATE")).join("\n"));
  return svid;
}

describe("issued SVIDs under Debian's openssl", () => {
  it("openssl verify accepts the SVID against the trust bundle's roots (taken from the SPIFFE bundle document)", async () => {
    const leaf = join(dir, "leaf.pem");
    await issueTo(leaf);
    const bundle = parseBundle("sigil.local", bundleToJson(ca.bundle()));
    const bundleFile = join(dir, "bundle.pem");
    await writeFile(bundleFile, bundleRootsPem(bundle));
    const { stdout } = await run("openssl", ["verify", "-purpose", "sslclient", "-CAfile", bundleFile, leaf]);
    expect(stdout.trim()).toBe(`${leaf}: OK`);
    const server = await run("openssl", ["verify", "-purpose", "sslserver", "-CAfile", bundleFile, leaf]);
    expect(server.stdout.trim()).toBe(`${leaf}: OK`);
  });

  it("openssl rejects the SVID against a bundle from another CA", async () => {
    const leaf = join(dir, "leaf2.pem");
    await issueTo(leaf);
    const other = await CertificateAuthority.open({ dataDir: join(dir, "other") });
    const otherFile = join(dir, "other.pem");
    await writeFile(otherFile, bundleRootsPem(other.bundle()));
    const failed = await run("openssl", ["verify", "-CAfile", otherFile, leaf]).then(
      () => null,
      (err: { stdout?: string; stderr?: string }) => `${err.stdout ?? ""}${err.stderr ?? ""}`,
    );
    expect(failed).toMatch(/unable to get local issuer certificate/);
  });

  it("openssl x509 -text shows exactly one URI SAN, CA:FALSE and critical key usage digitalSignature", async () => {
    const leaf = join(dir, "leaf3.pem");
    await issueTo(leaf);
    const { stdout } = await run("openssl", ["x509", "-in", leaf, "-noout", "-text"]);
    expect(stdout.match(/URI:/g)).toHaveLength(1);
    expect(stdout).toMatch(
      /X509v3 Subject Alternative Name: *\n\s*URI:spiffe:\/\/sigil\.local\/workload\/payments\s*\n/,
    );
    expect(stdout).toMatch(/X509v3 Basic Constraints: critical\s*\n\s*CA:FALSE/);
    expect(stdout).toMatch(/X509v3 Key Usage: critical\s*\n\s*Digital Signature\s*\n/);
    expect(stdout).toMatch(
      /X509v3 Extended Key Usage: *\n\s*TLS Web Server Authentication, TLS Web Client Authentication/,
    );
    expect(stdout).toMatch(/Public Key Algorithm: id-ecPublicKey[\s\S]*NIST CURVE: P-256/);
  });
});
