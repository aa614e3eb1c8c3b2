import { X509Certificate } from "node:crypto";
import { mkdtemp, readdir, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { x509 } from "../../core/svid/x509.ts";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { CaError, CertificateAuthority } from "../../controlplane/ca/authority.ts";
import { generateP256 } from "../../controlplane/ca/keys.ts";
import type { AttestedLabel } from "../../core/labels.ts";
import { bundleToDocument, parseBundle } from "../../core/svid/bundle.ts";
import { verifyJwtSvid } from "../../core/svid/jwt.ts";
import { SvidVerificationError, verifySvid } from "../../core/svid/verify.ts";

const LABELS: AttestedLabel[] = [
  { key: "app", value: "api", provenance: "join-token" },
  { key: "proc.user", value: "svc", provenance: "proc" },
];

let dataDir: string;
beforeEach(async () => {
  dataDir = await mkdtemp(join(tmpdir(), "sigil-ca-"));
});
afterEach(async () => {
  await rm(dataDir, { recursive: true, force: true });
});

async function issue(ca: CertificateAuthority, now?: Date) {
  const { keys } = await generateP256();
  return ca.issueSvid({
    publicKey: keys.publicKey,
    spiffeId: "spiffe://sigil.local/workload/api",
    labels: LABELS,
    ttlSeconds: 3600,
    now,
  });
}

describe("certificate authority", () => {
  it("creates a P-256 root on first start with keys at rest 0600 in a 0700 directory", async () => {
    const ca = await CertificateAuthority.open({ dataDir });
    const [gen] = ca.describe();
    expect(gen?.source).toBe("generated");
    const caDir = join(dataDir, "ca");
    expect((await stat(caDir)).mode & 0o777).toBe(0o700);
    const genDirs = (await readdir(caDir)).filter((n) => n.startsWith("g"));
    expect(genDirs).toHaveLength(1);
    for (const file of ["ca.key", "jwt.key"]) {
      expect((await stat(join(caDir, genDirs[0] as string, file))).mode & 0o777).toBe(0o600);
    }
    const root = ca.bundle().x509Authorities[0] as X509Certificate;
    expect(root.ca).toBe(true);
    expect(root.publicKey.asymmetricKeyDetails?.namedCurve).toBe("prime256v1");
    const reopened = await CertificateAuthority.open({ dataDir });
    expect(reopened.bundle().x509Authorities[0]?.fingerprint256).toBe(root.fingerprint256);
  });

  it("refuses a CA key file others can read", async () => {
    await CertificateAuthority.open({ dataDir });
    const caDir = join(dataDir, "ca");
    const gen = (await readdir(caDir)).find((n) => n.startsWith("g")) as string;
    const { chmod } = await import("node:fs/promises");
    await chmod(join(caDir, gen, "ca.key"), 0o644);
    await expect(CertificateAuthority.open({ dataDir })).rejects.toThrow(/ca\.key has mode 644/);
  });

  it("issues SVIDs with one URI SAN, CA:FALSE, critical digitalSignature, both EKUs and the labels", async () => {
    const ca = await CertificateAuthority.open({ dataDir });
    const svid = await issue(ca);
    const leaf = new x509.X509Certificate(svid.chain[0] as Buffer);
    expect(leaf.getExtension(x509.BasicConstraintsExtension)?.ca).toBe(false);
    const ku = leaf.getExtension(x509.KeyUsagesExtension);
    expect(ku?.critical).toBe(true);
    expect(ku?.usages).toBe(x509.KeyUsageFlags.digitalSignature);
    expect(leaf.getExtension(x509.ExtendedKeyUsageExtension)?.usages).toEqual([
      x509.ExtendedKeyUsage.serverAuth,
      x509.ExtendedKeyUsage.clientAuth,
    ]);
    expect(leaf.notAfter.getTime() - leaf.notBefore.getTime()).toBe(3600_000);
    const verified = verifySvid(svid.chain, { bundle: ca.bundle(), purpose: "client" });
    expect(verified.identity.spiffeId).toBe("spiffe://sigil.local/workload/api");
    expect(verified.identity.labels).toEqual({
      app: "api",
      "proc.user": "svc",
      "provenance.sigil.dev/app": "operator",
      "provenance.sigil.dev/proc.user": "node",
    });
    expect(verified.attestedLabels).toEqual(LABELS);
  });

  it("publishes a SPIFFE bundle with x509-svid and jwt-svid keys that round-trips", async () => {
    const ca = await CertificateAuthority.open({ dataDir, refreshHintSeconds: 60 });
    const doc = bundleToDocument(ca.bundle());
    expect(doc.spiffe_sequence).toBe(1);
    expect(doc.spiffe_refresh_hint).toBe(60);
    expect(doc.keys.map((k) => k.use)).toEqual(["x509-svid", "jwt-svid"]);
    expect(doc.keys[0]).toMatchObject({ kty: "EC", crv: "P-256" });
    expect(doc.keys[1]).not.toHaveProperty("d");
    const parsed = parseBundle("sigil.local", JSON.stringify(doc));
    const svid = await issue(ca);
    expect(verifySvid(svid.chain, { bundle: parsed, purpose: "server" }).identity.spiffeId).toMatch(
      /workload\/api$/,
    );
    const jwt = await ca.issueJwtSvid({
      spiffeId: svid.spiffeId,
      labels: LABELS,
      audience: ["sigil"],
      certificate: svid.chain[0] as Buffer,
      expiresAt: svid.notAfter,
    });
    const claims = await verifyJwtSvid(jwt, {
      bundle: parsed,
      audience: "sigil",
      certificate: svid.chain[0] as Buffer,
    });
    expect(claims).toMatchObject({ spiffeId: svid.spiffeId, labels: { app: "api", "proc.user": "svc" } });
    const other = await issue(ca);
    await expect(
      verifyJwtSvid(jwt, { bundle: parsed, audience: "sigil", certificate: other.chain[0] as Buffer }),
    ).rejects.toThrow(/different certificate/);
    await expect(verifyJwtSvid(jwt, { bundle: parsed, audience: "elsewhere" })).rejects.toThrow(/aud/);
  });

  it("rotates with an overlap: both roots trusted, the new one signs after activation, the old retires later", async () => {
    const t0 = new Date();
    const ca = await CertificateAuthority.open({ dataDir, maxLeafTtlSeconds: 3600, now: t0 });
    const before = await issue(ca, t0);
    const { activateAt } = await ca.rotate({ activateInSeconds: 30, now: t0 });
    expect(ca.bundle().x509Authorities).toHaveLength(2);
    expect(ca.bundle().sequence).toBe(2);
    const during = await issue(ca, new Date(t0.getTime() + 10_000));
    const after = await issue(ca, new Date(activateAt.getTime() + 1000));
    const issuerOf = (chain: readonly Buffer[]) => new X509Certificate(chain[0] as Buffer).issuer;
    expect(issuerOf(during.chain)).toBe(issuerOf(before.chain));
    expect(issuerOf(after.chain)).not.toBe(issuerOf(before.chain));
    for (const svid of [before, after]) {
      expect(() =>
        verifySvid(svid.chain, {
          bundle: ca.bundle(),
          purpose: "client",
          now: new Date(t0.getTime() + 60_000),
        }),
      ).not.toThrow();
    }
    expect(await ca.retireExpired(new Date(activateAt.getTime() + 3599_000))).toBe(false);
    expect(await ca.retireExpired(new Date(activateAt.getTime() + 3600_000))).toBe(true);
    const bundle = ca.bundle();
    expect(bundle.x509Authorities).toHaveLength(1);
    expect(bundle.sequence).toBe(3);
    expect(() =>
      verifySvid(after.chain, { bundle, purpose: "client", now: new Date(activateAt.getTime() + 1000) }),
    ).not.toThrow();
    const err = (() => {
      try {
        verifySvid(before.chain, { bundle, purpose: "client", now: new Date(t0.getTime() + 1000) });
      } catch (e) {
        return e;
      }
    })();
    expect(err).toBeInstanceOf(SvidVerificationError);
    expect((err as SvidVerificationError).reason).toBe("untrusted");
    const reopened = await CertificateAuthority.open({ dataDir });
    expect(reopened.bundle().sequence).toBe(3);
  });

  it("refuses a rotation based on a state another replica has changed, and takes that replica's CA", async () => {
    const t0 = new Date();
    const a = await CertificateAuthority.open({ dataDir, now: t0 });
    const b = await CertificateAuthority.open({ dataDir, now: t0 });
    await a.rotate({ activateInSeconds: 30, now: t0 });
    // b has not seen a's rotation (as a replica whose watch has not fired yet).
    await expect(b.rotate({ activateInSeconds: 30, now: t0 })).rejects.toThrow(/changed since it was read/);
    const roots = (ca: CertificateAuthority) => ca.bundle().x509Authorities.map((c) => c.fingerprint256);
    expect(roots(a)).toHaveLength(2);
    expect(roots(b)).toEqual(roots(a));
    const signer = (ca: CertificateAuthority) => ca.describe().find((g) => g.signing)?.id;
    expect(signer(b)).toBe(signer(a));
    // The loser's keys were removed: only the two generations of the stored state remain on disk.
    const kept = (await readdir(join(dataDir, "ca"))).filter((f) => f !== "state.json");
    expect(kept.sort()).toEqual(
      a
        .describe()
        .map((g) => g.id)
        .sort(),
    );
    const after = await issue(b, new Date(t0.getTime() + 31_000));
    expect(() =>
      verifySvid(after.chain, {
        bundle: a.bundle(),
        purpose: "client",
        now: new Date(t0.getTime() + 32_000),
      }),
    ).not.toThrow();
  });

  it("uses a CA the user brings, with its chain, and puts the chain's root in the bundle", async () => {
    const rootKeys = await generateP256();
    const root = await x509.X509CertificateGenerator.createSelfSigned({
      name: "CN=Corp Root",
      keys: rootKeys.keys,
      signingAlgorithm: { name: "ECDSA", hash: "SHA-256" },
      extensions: [
        new x509.BasicConstraintsExtension(true, undefined, true),
        await x509.SubjectKeyIdentifierExtension.create(rootKeys.keys.publicKey),
      ],
    });
    const interKeys = await generateP256();
    const inter = await x509.X509CertificateGenerator.create({
      subject: "CN=Corp Sigil Intermediate",
      issuer: root.subjectName,
      publicKey: interKeys.keys.publicKey,
      signingKey: rootKeys.keys.privateKey,
      signingAlgorithm: { name: "ECDSA", hash: "SHA-256" },
      extensions: [
        new x509.BasicConstraintsExtension(true, 0, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign, true),
        await x509.SubjectKeyIdentifierExtension.create(interKeys.keys.publicKey),
        await x509.AuthorityKeyIdentifierExtension.create(root),
      ],
    });
    await expect(
      CertificateAuthority.open({
        dataDir,
        imported: { certPem: inter.toString("pem"), keyPem: rootKeys.privatePem },
      }),
    ).rejects.toThrow(CaError);
    const ca = await CertificateAuthority.open({
      dataDir,
      imported: {
        certPem: inter.toString("pem"),
        keyPem: interKeys.privatePem,
        chainPem: root.toString("pem"),
      },
    });
    expect(ca.bundle().x509Authorities.map((c) => c.subject)).toEqual(["CN=Corp Root"]);
    const svid = await issue(ca);
    expect(svid.chain).toHaveLength(2);
    expect(verifySvid(svid.chain, { bundle: ca.bundle(), purpose: "client" }).identity.spiffeId).toMatch(
      /api$/,
    );
    expect(() => verifySvid([svid.chain[0] as Buffer], { bundle: ca.bundle(), purpose: "client" })).toThrow(
      /does not chain/,
    );
  });

  it("refuses to sign for another trust domain or beyond the maximum TTL", async () => {
    const ca = await CertificateAuthority.open({ dataDir, maxLeafTtlSeconds: 7200 });
    const { keys } = await generateP256();
    await expect(
      ca.issueSvid({
        publicKey: keys.publicKey,
        spiffeId: "spiffe://evil.test/x",
        labels: [],
        ttlSeconds: 60,
      }),
    ).rejects.toThrow(/not a workload SPIFFE ID in sigil.local/);
    await expect(
      ca.issueSvid({
        publicKey: keys.publicKey,
        spiffeId: "spiffe://sigil.local/x",
        labels: [],
        ttlSeconds: 7201,
      }),
    ).rejects.toThrow(/outside 1..7200s/);
  });
});
