import { X509Certificate, createPrivateKey } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CertificateAuthority } from "../../controlplane/ca/authority.ts";
import { generateP256 } from "../../controlplane/ca/keys.ts";
import { RevocationIndex, canonicalSerial } from "../../core/svid/revocation.ts";
import { WarmHandshakes } from "../../native/index.ts";
import { MARKS } from "../../sidecar/fastpath/marks.ts";
import {
  TokenError,
  chainDigest,
  decodeToken,
  derivePairKey,
  encodeToken,
  newNonce,
} from "../../sidecar/fastpath/token.ts";
import type { TokenSigner } from "../../sidecar/fastpath/token.ts";
import { TokenVerifier } from "../../sidecar/fastpath/verifier.ts";

const TUPLE = {
  clientAddress: "198.18.0.1",
  clientPort: 40000,
  serverAddress: "198.18.0.2",
  serverPort: 5432,
};
const TUPLE6 = {
  clientAddress: "2001:2::1",
  clientPort: 40000,
  serverAddress: "2001:2::2",
  serverPort: 5432,
};

let dir: string;
let ca: CertificateAuthority;
let web: TokenSigner;

async function signer(name: string): Promise<TokenSigner> {
  const { keys, privatePem } = await generateP256();
  const issued = await ca.issueSvid({
    publicKey: keys.publicKey,
    spiffeId: `spiffe://sigil.local/workload/${name}`,
    labels: [{ key: "app", value: name, provenance: "static" }],
    ttlSeconds: 600,
  });
  return { chain: [...issued.chain], privateKey: createPrivateKey(privatePem) };
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "sigil-fp-token-"));
  ca = await CertificateAuthority.open({ dataDir: dir, trustDomain: "sigil.local" });
  web = await signer("web");
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

function nonceStore(windowMs: number, replayEntries: number): WarmHandshakes {
  return new WarmHandshakes({ exid: 0x5347, windowMs, replayEntries, marks: MARKS });
}

function verifier(now = Date.now): TokenVerifier {
  return new TokenVerifier(
    { bundle: ca.bundle(), revocations: RevocationIndex.empty("sigil.local") },
    { windowMs: 5_000, identityCacheEntries: 16, replays: nonceStore(5_000, 1024), now },
  );
}

function reasonOf(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    if (err instanceof TokenError) return err.reason;
    throw err;
  }
  return "accepted";
}

describe("fast-path token", () => {
  it("round-trips and verifies for exactly its 4-tuple (IPv4 and IPv6), with labels from the SVID", () => {
    for (const tuple of [TUPLE, TUPLE6]) {
      const token = encodeToken(web, { type: "syn", nonce: newNonce(), timestampMs: Date.now(), tuple });
      const v = verifier().verify(token, "syn", tuple);
      expect(v.identity).toMatchObject({
        spiffeId: "spiffe://sigil.local/workload/web",
        labels: { app: "web" },
      });
      const other = { ...tuple, clientPort: tuple.clientPort + 1 };
      expect(reasonOf(() => verifier().verify(token, "syn", other))).toBe("bad-signature");
    }
  });

  it("fits a SYN under a 1500-byte path MTU", () => {
    const token = encodeToken(web, {
      type: "syn-ack",
      nonce: newNonce(),
      echoNonce: newNonce(),
      timestampMs: 0,
      tuple: TUPLE6,
    });
    expect(token.length).toBeLessThan(1500 - 40 - 60);
  });

  it("binds a SYN-ACK to the client's nonce and refuses a SYN token used as a SYN-ACK", async () => {
    const db = await signer("db");
    const clientNonce = newNonce();
    const synAck = encodeToken(db, {
      type: "syn-ack",
      nonce: newNonce(),
      echoNonce: clientNonce,
      timestampMs: Date.now(),
      tuple: TUPLE,
    });
    expect(reasonOf(() => verifier().verify(synAck, "syn-ack", TUPLE, [newNonce()]))).toBe("nonce-mismatch");
    expect(reasonOf(() => verifier().verify(synAck, "syn-ack", TUPLE, []))).toBe("nonce-mismatch");
    expect(verifier().verify(synAck, "syn-ack", TUPLE, [newNonce(), clientNonce]).identity.labels).toEqual({
      app: "db",
      "provenance.sigil.dev/app": "operator",
    });
    const syn = encodeToken(db, { type: "syn", nonce: newNonce(), timestampMs: Date.now(), tuple: TUPLE });
    expect(reasonOf(() => verifier().verify(syn, "syn-ack", TUPLE, [clientNonce]))).toBe("wrong-type");
  });

  it("serves a warm handshake from the identity cache and still checks the signature", () => {
    const v = verifier();
    const t1 = encodeToken(web, { type: "syn", nonce: newNonce(), timestampMs: Date.now(), tuple: TUPLE });
    expect(v.verify(t1, "syn", TUPLE).cached).toBe(false);
    const t2 = encodeToken(web, { type: "syn", nonce: newNonce(), timestampMs: Date.now(), tuple: TUPLE });
    expect(v.verify(t2, "syn", TUPLE).cached).toBe(true);
    const forged = Buffer.from(
      encodeToken(web, { type: "syn", nonce: newNonce(), timestampMs: Date.now(), tuple: TUPLE }),
    );
    forged.writeUInt8((forged.at(-1) as number) ^ 0xff, forged.length - 1);
    expect(reasonOf(() => v.verify(forged, "syn", TUPLE))).toBe("bad-signature");
    // A new revocation list voids every cached verification.
    v.setTrust({
      bundle: ca.bundle(),
      revocations: new RevocationIndex({
        trustDomain: "sigil.local",
        sequence: 2,
        entries: [
          {
            spiffeId: "spiffe://sigil.local/workload/web",
            revokedAtMs: Date.now(),
            expiresAtMs: Date.now() + 1e6,
            reason: "test",
          },
        ],
      }),
    });
    const t3 = encodeToken(web, { type: "syn", nonce: newNonce(), timestampMs: Date.now(), tuple: TUPLE });
    expect(reasonOf(() => v.verify(t3, "syn", TUPLE))).toBe("revoked");
  });

  it("refuses a token whose certificate is revoked by serial and accepts another certificate of the same workload", async () => {
    const leaked = await signer("web");
    const renewed = await signer("web");
    const v = verifier();
    v.setTrust({
      bundle: ca.bundle(),
      revocations: new RevocationIndex({
        trustDomain: "sigil.local",
        sequence: 3,
        entries: [],
        certificates: [
          {
            serial: canonicalSerial(new X509Certificate(leaked.chain[0] as Buffer).serialNumber),
            spiffeId: "spiffe://sigil.local/workload/web",
            revokedAtMs: Date.now(),
            expiresAtMs: Date.now() + 1e6,
            reason: "key leaked",
          },
        ],
      }),
    });
    const refused = encodeToken(leaked, {
      type: "syn",
      nonce: newNonce(),
      timestampMs: Date.now(),
      tuple: TUPLE,
    });
    expect(reasonOf(() => v.verify(refused, "syn", TUPLE))).toBe("revoked");
    const served = encodeToken(renewed, {
      type: "syn",
      nonce: newNonce(),
      timestampMs: Date.now(),
      tuple: TUPLE,
    });
    expect(reasonOf(() => v.verify(served, "syn", TUPLE))).toBe("accepted");
  });

  it("refuses a replay inside the window and a stale token after it", () => {
    let now = Date.now();
    const v = verifier(() => now);
    const token = encodeToken(web, { type: "syn", nonce: newNonce(), timestampMs: now, tuple: TUPLE });
    expect(reasonOf(() => v.verify(token, "syn", TUPLE))).toBe("accepted");
    expect(reasonOf(() => v.verify(token, "syn", TUPLE))).toBe("replayed");
    now += 5_001;
    expect(reasonOf(() => v.verify(token, "syn", TUPLE))).toBe("expired");
  });

  it("proves possession by MAC under the static-ECDH pair key in a warm handshake", async () => {
    const db = await signer("db");
    const webDigest = chainDigest(web.chain);
    const dbDigest = chainDigest(db.chain);
    const { X509Certificate } = await import("node:crypto");
    const dbPublic = new X509Certificate(db.chain[0] as Buffer).publicKey;
    const webPublic = new X509Certificate(web.chain[0] as Buffer).publicKey;
    // Both ends derive the same key, each from its own private key and the other's certificate.
    const clientSide = derivePairKey(web.privateKey, dbPublic, webDigest, dbDigest);
    const serverSide = derivePairKey(db.privateKey, webPublic, dbDigest, webDigest);
    expect(clientSide.equals(serverSide)).toBe(true);

    const mac = { key: clientSide, keyId: Buffer.from(dbDigest, "hex") };
    const token = encodeToken(web, {
      type: "syn",
      nonce: newNonce(),
      timestampMs: Date.now(),
      tuple: TUPLE,
      mac,
    });
    const resolver = (keyId: Buffer) => (keyId.toString("hex") === dbDigest ? serverSide : null);
    const v = verifier().verify(token, "syn", TUPLE, undefined, resolver);
    expect(v.token.proofKind).toBe("mac");
    expect(v.identity.spiffeId).toBe("spiffe://sigil.local/workload/web");
    // Wrong connection, a key this side does not hold, or a third party's key: refused.
    expect(
      reasonOf(() => verifier().verify(token, "syn", { ...TUPLE, serverPort: 1 }, undefined, resolver)),
    ).toBe("bad-signature");
    expect(reasonOf(() => verifier().verify(token, "syn", TUPLE, undefined, () => null))).toBe("unknown-key");
    const mallory = await signer("mallory");
    const forgedKey = derivePairKey(mallory.privateKey, dbPublic, chainDigest(mallory.chain), dbDigest);
    const forged = encodeToken(web, {
      type: "syn",
      nonce: newNonce(),
      timestampMs: Date.now(),
      tuple: TUPLE,
      mac: { key: forgedKey, keyId: Buffer.from(dbDigest, "hex") },
    });
    expect(reasonOf(() => verifier().verify(forged, "syn", TUPLE, undefined, resolver))).toBe(
      "bad-signature",
    );
  });

  it("rejects truncated, oversized and unknown-version tokens as malformed", () => {
    const token = encodeToken(web, { type: "syn", nonce: newNonce(), timestampMs: Date.now(), tuple: TUPLE });
    for (const bad of [
      token.subarray(0, 10),
      token.subarray(0, token.length - 1),
      Buffer.concat([token, Buffer.from([0])]),
      Buffer.concat([Buffer.from([9]), token.subarray(1)]),
      Buffer.concat([token.subarray(0, 1), Buffer.from([7]), token.subarray(2)]),
    ]) {
      expect(() => decodeToken(bad)).toThrow(TokenError);
      expect(reasonOf(() => verifier().verify(bad, "syn", TUPLE))).toBe("malformed");
    }
  });
});

describe("replay cache", () => {
  it("keeps nonces for twice the window and fails closed when full of live ones", () => {
    const cache = nonceStore(500, 2);
    const [a, b, c] = ["a", "b", "c"].map((n) => Buffer.alloc(16, n));
    expect(cache.rememberNonce(a as Buffer, 0)).toBe("ok");
    expect(cache.rememberNonce(a as Buffer, 500)).toBe("replayed");
    expect(cache.rememberNonce(b as Buffer, 600)).toBe("ok");
    expect(cache.rememberNonce(c as Buffer, 700)).toBe("full");
    expect(cache.rememberNonce(c as Buffer, 1_001)).toBe("ok"); // "a" expired and was swept
    expect(cache.rememberNonce(a as Buffer, 1_002)).toBe("full");
  });
});
