import { once } from "node:events";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, createServer } from "node:tls";
import type { Server, TLSSocket } from "node:tls";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CertificateAuthority } from "../../controlplane/ca/authority.ts";
import type { AttestedLabel } from "../../core/labels.ts";
import { bundleRootsPem } from "../../core/svid/bundle.ts";
import type { TrustBundle } from "../../core/svid/bundle.ts";
import { labelsExtensionDer } from "../../core/svid/labels-extension.ts";
import { RevocationIndex } from "../../core/svid/revocation.ts";
import { verifyTlsPeer } from "../../core/svid/tls.ts";
import type { SvidRejection, VerifiedSvid } from "../../core/svid/verify.ts";
import { SvidVerificationError } from "../../core/svid/verify.ts";
import { x509 } from "../../core/svid/x509.ts";
import { generateWorkloadKey } from "../../sidecar/identity/workload-key.ts";
import { signingCaOf } from "../support/identity-harness.ts";

/** A certificate chain (PEM) plus its private key, as a TLS endpoint presents it. */
interface Presented {
  readonly certPem: string;
  readonly keyPem: string;
}

const dirs: string[] = [];
let ca: CertificateAuthority;
let otherCa: CertificateAuthority;
let otherDomainCa: CertificateAuthority;
let revocations: RevocationIndex;

async function newCa(trustDomain = "sigil.local"): Promise<CertificateAuthority> {
  const dataDir = await mkdtemp(join(tmpdir(), "sigil-mtls-"));
  dirs.push(dataDir);
  return CertificateAuthority.open({ dataDir, trustDomain });
}

const pem = (ders: readonly Buffer[]) =>
  ders.map((d) => x509.PemConverter.encode(d, "CERTIFICATE")).join("\n");

async function svid(
  authority: CertificateAuthority,
  name: string,
  options: { now?: Date } = {},
): Promise<Presented> {
  const key = await generateWorkloadKey();
  const labels: AttestedLabel[] = [{ key: "app", value: name, provenance: "join-token" }];
  const issued = await authority.issueSvid({
    publicKey: key.keys.publicKey,
    spiffeId: `spiffe://${authority.trustDomain}/workload/${name}`,
    labels,
    ttlSeconds: 3600,
    now: options.now,
  });
  return { certPem: pem(issued.chain), keyPem: key.privateKeyPem };
}

/** A certificate signed by the real CA key but breaking one SVID rule. */
async function crafted(dataDir: string, extensions: x509.Extension[]): Promise<Presented> {
  const signer = await signingCaOf(dataDir);
  const key = await generateWorkloadKey();
  const cert = await x509.X509CertificateGenerator.create({
    subject: "O=Sigil, OU=workload",
    issuer: signer.cert.subjectName,
    notBefore: new Date(Date.now() - 60_000),
    notAfter: new Date(Date.now() + 3600_000),
    publicKey: key.keys.publicKey,
    signingKey: signer.key,
    signingAlgorithm: { name: "ECDSA", hash: "SHA-256" },
    extensions: [await x509.AuthorityKeyIdentifierExtension.create(signer.cert), ...extensions],
  });
  return { certPem: cert.toString("pem"), keyPem: key.privateKeyPem };
}

const leafExtensions = (uris: string[], ca = false) => [
  new x509.BasicConstraintsExtension(ca, undefined, true),
  new x509.KeyUsagesExtension(
    ca
      ? x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.digitalSignature
      : x509.KeyUsageFlags.digitalSignature,
    true,
  ),
  new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
  new x509.SubjectAlternativeNameExtension(uris.map((value) => ({ type: "url" as const, value }))),
  new x509.Extension(labelsExtensionDer([{ key: "app", value: "x", provenance: "static" }])),
];

interface HandshakeResult {
  readonly serverSaw?: VerifiedSvid;
  readonly serverRejected?: SvidVerificationError;
  readonly clientSaw?: VerifiedSvid;
  readonly clientRejected?: SvidVerificationError;
  readonly echoed?: string;
}

/**
 * One real mutual-TLS exchange on loopback. Both ends use node:tls with requestCert and run
 * `verifyTlsPeer` in secureConnection / secureConnect before any byte of application data; a
 * refused peer's socket is destroyed.
 */
async function handshake(
  server: Presented,
  client: Presented,
  bundle: TrustBundle,
): Promise<HandshakeResult> {
  const result: { -readonly [K in keyof HandshakeResult]: HandshakeResult[K] } = {};
  const ca = bundleRootsPem(bundle);
  const tlsServer: Server = createServer({
    cert: server.certPem,
    key: server.keyPem,
    ca,
    requestCert: true,
    rejectUnauthorized: false,
  });
  tlsServer.on("secureConnection", (socket: TLSSocket) => {
    try {
      result.serverSaw = verifyTlsPeer(socket, { bundle, purpose: "client", revocations });
      socket.on("data", (d) => socket.end(`echo:${d.toString()}`));
    } catch (err) {
      result.serverRejected = err as SvidVerificationError;
      socket.destroy();
    }
  });
  tlsServer.listen(0, "127.0.0.1");
  await once(tlsServer, "listening");
  try {
    const socket = connect({
      host: "127.0.0.1",
      port: (tlsServer.address() as AddressInfo).port,
      cert: client.certPem,
      key: client.keyPem,
      ca,
      rejectUnauthorized: false,
      // Identity is the SPIFFE ID, checked by verifyTlsPeer below, not a host name.
      checkServerIdentity: () => undefined,
    });
    const chunks: Buffer[] = [];
    await new Promise<void>((resolve) => {
      socket.on("secureConnect", () => {
        try {
          result.clientSaw = verifyTlsPeer(socket, { bundle, purpose: "server", revocations });
          socket.write("ping");
        } catch (err) {
          result.clientRejected = err as SvidVerificationError;
          socket.destroy();
        }
      });
      socket.on("data", (d: Buffer) => chunks.push(d));
      socket.on("close", () => resolve());
      socket.on("error", () => undefined);
      socket.setTimeout(5000, () => socket.destroy());
    });
    if (chunks.length > 0) result.echoed = Buffer.concat(chunks).toString();
  } finally {
    tlsServer.close();
  }
  return result;
}

let serverCreds: Presented;
let clientCreds: Presented;
let caDir: string;

beforeAll(async () => {
  ca = await newCa();
  caDir = dirs[0] as string;
  otherCa = await newCa();
  otherDomainCa = await newCa("evil.test");
  revocations = RevocationIndex.empty("sigil.local");
  serverCreds = await svid(ca, "api");
  clientCreds = await svid(ca, "web");
});
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

async function expectServerRefuses(client: Presented, reason: SvidRejection, message: RegExp) {
  const r = await handshake(serverCreds, client, ca.bundle());
  expect(r.serverSaw).toBeUndefined();
  expect(r.echoed).toBeUndefined();
  expect(r.serverRejected).toBeInstanceOf(SvidVerificationError);
  expect(r.serverRejected?.reason).toBe(reason);
  expect(r.serverRejected?.message).toMatch(message);
}

describe("mutual TLS between Sigil identities", () => {
  it("succeeds between two SVIDs of the trust domain, each side learning the other's identity and labels", async () => {
    const r = await handshake(serverCreds, clientCreds, ca.bundle());
    expect(r.serverRejected).toBeUndefined();
    expect(r.clientRejected).toBeUndefined();
    expect(r.serverSaw?.identity.spiffeId).toBe("spiffe://sigil.local/workload/web");
    expect(r.serverSaw?.identity.labels).toEqual({ app: "web", "provenance.sigil.dev/app": "operator" });
    expect(r.clientSaw?.identity.spiffeId).toBe("spiffe://sigil.local/workload/api");
    expect(r.echoed).toBe("echo:ping");
  });

  it("refuses an expired certificate", async () => {
    await expectServerRefuses(
      await svid(ca, "old", { now: new Date(Date.now() - 2 * 3600_000) }),
      "expired",
      /spiffe:\/\/sigil.local\/workload\/old expired at/,
    );
  });

  it("refuses a certificate from another CA of the same trust domain", async () => {
    await expectServerRefuses(
      await svid(otherCa, "web"),
      "untrusted",
      /does not chain to the sigil.local trust bundle/,
    );
  });

  it("refuses a certificate from another trust domain", async () => {
    await expectServerRefuses(
      await svid(otherDomainCa, "web"),
      "trust-domain",
      /trust domain "evil.test", expected "sigil.local"/,
    );
  });

  it("refuses a CA certificate used as a leaf, even one the real CA signed", async () => {
    const asLeaf = await crafted(caDir, leafExtensions(["spiffe://sigil.local/workload/web"], true));
    await expectServerRefuses(asLeaf, "ca-as-leaf", /is a CA certificate/);
  });

  it("refuses a certificate with two URI SANs, even one the real CA signed", async () => {
    const twoSans = await crafted(
      caDir,
      leafExtensions(["spiffe://sigil.local/workload/web", "spiffe://sigil.local/workload/admin"]),
    );
    await expectServerRefuses(twoSans, "uri-san", /2 URI SANs; an SVID has exactly one/);
  });

  it("refuses a revoked workload once the revocation list names it", async () => {
    const before = await handshake(serverCreds, clientCreds, ca.bundle());
    expect(before.serverSaw).toBeDefined();
    revocations = new RevocationIndex({
      trustDomain: "sigil.local",
      sequence: 1,
      entries: [
        {
          spiffeId: "spiffe://sigil.local/workload/web",
          revokedAtMs: Date.now(),
          expiresAtMs: Date.now() + 3600_000,
          reason: "key compromised",
        },
      ],
    });
    try {
      await expectServerRefuses(clientCreds, "revoked", /workload\/web was revoked at .*key compromised/);
    } finally {
      revocations = RevocationIndex.empty("sigil.local");
    }
  });

  it("keeps old and new roots working together during a CA rotation's overlap", async () => {
    const rotating = await newCa();
    const oldLeaf = await svid(rotating, "api");
    await rotating.rotate({ activateInSeconds: 0 });
    const newLeaf = await svid(rotating, "web");
    expect(newLeaf.certPem).not.toBe(oldLeaf.certPem);
    const r = await handshake(oldLeaf, newLeaf, rotating.bundle());
    expect(r.serverRejected).toBeUndefined();
    expect(r.clientRejected).toBeUndefined();
    expect(r.echoed).toBe("echo:ping");
    // A peer still holding only the old bundle would refuse the new root's leaf: this is why a new
    // root is trusted at once but signs only after the bundle has had time to spread.
    const stale = { ...rotating.bundle(), x509Authorities: rotating.bundle().x509Authorities.slice(0, 1) };
    expect((await handshake(oldLeaf, newLeaf, stale)).serverRejected?.reason).toBe("untrusted");
  });

  it("lets the client refuse a server whose certificate is not a valid SVID", async () => {
    const r = await handshake(
      await svid(ca, "api", { now: new Date(Date.now() - 2 * 3600_000) }),
      clientCreds,
      ca.bundle(),
    );
    expect(r.clientRejected?.reason).toBe("expired");
    expect(r.echoed).toBeUndefined();
  });
});
