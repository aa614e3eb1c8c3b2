import { X509Certificate, webcrypto } from "node:crypto";
import { beforeAll, describe, expect, it } from "vitest";
import type { TrustBundle } from "../../core/svid/bundle.ts";
import { SvidVerificationError, verifySvid } from "../../core/svid/verify.ts";
import type { SvidRejection } from "../../core/svid/verify.ts";
import { x509 } from "../../core/svid/x509.ts";

const ALG = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" } as const;
const SIGN = { name: "ECDSA", hash: "SHA-256" } as const;
const SPIFFE_ID = "spiffe://sigil.local/workload/api";

interface Issuer {
  readonly name: string;
  readonly keys: webcrypto.CryptoKeyPair;
  readonly der: Buffer;
}

let serial = 1;
const newKeys = () =>
  webcrypto.subtle.generateKey(ALG, true, ["sign", "verify"]) as Promise<webcrypto.CryptoKeyPair>;

function validity() {
  return { notBefore: new Date(Date.now() - 60_000), notAfter: new Date(Date.now() + 3_600_000) };
}

interface CaShape {
  /** basicConstraints cA; default true. */
  readonly ca?: boolean;
  readonly pathLength?: number;
  /** Key usage flags; null leaves the extension out. */
  readonly usages?: number | null;
  readonly extra?: x509.Extension[];
  /** Subject name; defaults to a fresh one. */
  readonly name?: string;
}

function caExtensions(shape: CaShape): x509.Extension[] {
  const usages =
    shape.usages === undefined ? x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign : shape.usages;
  return [
    new x509.BasicConstraintsExtension(shape.ca ?? true, shape.pathLength, true),
    ...(usages === null ? [] : [new x509.KeyUsagesExtension(usages, true)]),
    ...(shape.extra ?? []),
  ];
}

async function root(shape: CaShape = {}): Promise<Issuer> {
  const keys = await newKeys();
  const name = shape.name ?? `CN=Test root ${serial}, O=Sigil`;
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: (serial++).toString(16).padStart(2, "0"),
    name,
    ...validity(),
    keys,
    signingAlgorithm: SIGN,
    extensions: caExtensions(shape),
  });
  return { name, keys, der: Buffer.from(cert.rawData) };
}

async function intermediate(parent: Issuer, shape: CaShape = {}): Promise<Issuer> {
  const keys = await newKeys();
  const name = shape.name ?? `CN=Test intermediate ${serial}, O=Sigil`;
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: (serial++).toString(16).padStart(2, "0"),
    subject: name,
    issuer: parent.name,
    ...validity(),
    publicKey: keys.publicKey,
    signingKey: parent.keys.privateKey,
    signingAlgorithm: SIGN,
    extensions: caExtensions(shape),
  });
  return { name, keys, der: Buffer.from(cert.rawData) };
}

async function leaf(parent: Issuer, shape: { ca?: boolean; usages?: number } = {}): Promise<Buffer> {
  const keys = await newKeys();
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: (serial++).toString(16).padStart(2, "0"),
    subject: "O=Sigil, OU=workload",
    issuer: parent.name,
    ...validity(),
    publicKey: keys.publicKey,
    signingKey: parent.keys.privateKey,
    signingAlgorithm: SIGN,
    extensions: [
      new x509.BasicConstraintsExtension(shape.ca ?? false, undefined, true),
      new x509.KeyUsagesExtension(shape.usages ?? x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([
        x509.ExtendedKeyUsage.serverAuth,
        x509.ExtendedKeyUsage.clientAuth,
      ]),
      new x509.SubjectAlternativeNameExtension([{ type: "url", value: SPIFFE_ID }]),
    ],
  });
  return Buffer.from(cert.rawData);
}

function bundleOf(anchor: Issuer): TrustBundle {
  return {
    trustDomain: "sigil.local",
    sequence: 1,
    refreshHintSeconds: 300,
    x509Authorities: [new X509Certificate(anchor.der)],
    jwtAuthorities: [],
  };
}

function verify(chain: Buffer[], anchor: Issuer) {
  return verifySvid(chain, { bundle: bundleOf(anchor), purpose: "client" });
}

function refusal(chain: Buffer[], anchor: Issuer): SvidVerificationError {
  try {
    verify(chain, anchor);
  } catch (err) {
    if (err instanceof SvidVerificationError) return err;
    throw err;
  }
  throw new Error("the chain was accepted");
}

function expectRefused(chain: Buffer[], anchor: Issuer, reason: SvidRejection, message: RegExp): void {
  const err = refusal(chain, anchor);
  expect(err.reason).toBe(reason);
  expect(err.message).toMatch(message);
}

let anchor: Issuer;

beforeAll(async () => {
  anchor = await root();
});

describe("SVID chain: intermediates must be allowed to sign certificates (RFC 5280 §4.2.1.3)", () => {
  it("accepts a leaf under an intermediate with keyCertSign", async () => {
    const ca = await intermediate(anchor);
    expect(verify([await leaf(ca), ca.der], anchor).identity.spiffeId).toBe(SPIFFE_ID);
  });

  it("refuses an intermediate whose key usage lacks keyCertSign, naming it", async () => {
    const ca = await intermediate(anchor, {
      name: "CN=No cert signing, O=Sigil",
      usages: x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.cRLSign,
    });
    expectRefused(
      [await leaf(ca), ca.der],
      anchor,
      "ca-key-usage",
      /intermediate CN=No cert signing.* lacks keyCertSign/,
    );
  });

  it("refuses a trust anchor whose key usage lacks keyCertSign", async () => {
    const bad = await root({ usages: x509.KeyUsageFlags.digitalSignature });
    expectRefused([await leaf(bad)], bad, "ca-key-usage", /trust anchor .* lacks keyCertSign/);
  });

  it("accepts an intermediate without a key usage extension (it restricts nothing, §6.1.4 (n))", async () => {
    const ca = await intermediate(anchor, { usages: null });
    expect(verify([await leaf(ca), ca.der], anchor).identity.spiffeId).toBe(SPIFFE_ID);
  });

  it("refuses an intermediate with a critical extension the verifier does not enforce", async () => {
    const ca = await intermediate(anchor, {
      extra: [new x509.Extension("1.3.6.1.4.1.55555.1", true, new Uint8Array([0x05, 0x00]))],
    });
    expectRefused(
      [await leaf(ca), ca.der],
      anchor,
      "untrusted",
      /unsupported critical extension 1\.3\.6\.1\.4\.1\.55555\.1/,
    );
  });

  it("refuses an intermediate that is not a CA", async () => {
    const notCa = await intermediate(anchor, { ca: false, name: "CN=End entity, O=Sigil" });
    expectRefused([await leaf(notCa), notCa.der], anchor, "untrusted", /CN=End entity.* is not a CA/);
  });
});

describe("SVID chain: pathLenConstraint (RFC 5280 §4.2.1.9)", () => {
  it("refuses a pathLen 0 intermediate that signed another intermediate", async () => {
    const zero = await intermediate(anchor, { name: "CN=Path zero, O=Sigil", pathLength: 0 });
    const below = await intermediate(zero);
    expectRefused(
      [await leaf(below), below.der, zero.der],
      anchor,
      "path-length",
      /intermediate CN=Path zero.* pathLenConstraint 0 but 1 intermediate CA certificate below it/,
    );
  });

  it("accepts a pathLen 0 intermediate that signs the leaf directly", async () => {
    const zero = await intermediate(anchor, { pathLength: 0 });
    expect(verify([await leaf(zero), zero.der], anchor).identity.spiffeId).toBe(SPIFFE_ID);
  });

  it("counts every intermediate below: pathLen 1 allows one, refuses two", async () => {
    const one = await intermediate(anchor, { pathLength: 1 });
    const second = await intermediate(one);
    expect(verify([await leaf(second), second.der, one.der], anchor).identity.spiffeId).toBe(SPIFFE_ID);
    const third = await intermediate(second);
    expectRefused(
      [await leaf(third), third.der, second.der, one.der],
      anchor,
      "path-length",
      /pathLenConstraint 1 but 2 intermediate CA certificates below it/,
    );
  });

  it("applies the trust anchor's own pathLenConstraint", async () => {
    const strict = await root({ pathLength: 0 });
    const ca = await intermediate(strict);
    expectRefused(
      [await leaf(ca), ca.der],
      strict,
      "path-length",
      /trust anchor .* pathLenConstraint 0 but 1 intermediate/,
    );
    expect(verify([await leaf(strict)], strict).identity.spiffeId).toBe(SPIFFE_ID);
  });

  it("leaves self-issued intermediates (a CA's key rollover) out of the count", async () => {
    const zero = await intermediate(anchor, { name: "CN=Rolling, O=Sigil", pathLength: 0 });
    const rolled = await intermediate(zero, { name: "CN=Rolling, O=Sigil" });
    expect(verify([await leaf(rolled), rolled.der, zero.der], anchor).identity.spiffeId).toBe(SPIFFE_ID);
  });
});

describe("SVID chain: the leaf is an end entity", () => {
  it("refuses a leaf with CA:TRUE even when its chain is valid", async () => {
    const ca = await intermediate(anchor);
    expectRefused(
      [await leaf(ca, { ca: true }), ca.der],
      anchor,
      "ca-as-leaf",
      /is a CA certificate \(CA:TRUE\)/,
    );
  });

  it("refuses a leaf without digitalSignature", async () => {
    const ca = await intermediate(anchor);
    expectRefused(
      [await leaf(ca, { usages: x509.KeyUsageFlags.keyEncipherment }), ca.der],
      anchor,
      "key-usage",
      /digitalSignature/,
    );
  });

  it("refuses a leaf whose key usage allows certificate signing", async () => {
    const ca = await intermediate(anchor);
    expectRefused(
      [
        await leaf(ca, {
          usages: x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyCertSign,
        }),
        ca.der,
      ],
      anchor,
      "key-usage",
      /certificate or CRL signing/,
    );
  });
});
