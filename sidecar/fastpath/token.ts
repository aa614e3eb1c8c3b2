/**
 * The fast-path handshake token: the sender's CA-signed identity (its X.509-SVID chain, labels
 * included) plus proof of possession of the SVID's key — an ECDSA P-256 signature over a fresh nonce,
 * a timestamp, the connection's 4-tuple and, in a SYN-ACK, the client's nonce. Binary, versioned,
 * bounds-checked on decode; carried as the SYN / SYN-ACK payload behind TCP option 253.
 *
 *   u8 version (1) | u8 type | 16 B nonce | u64 timestamp ms | [SYN-ACK: 16 B echoed client nonce] |
 *   u8 certificate count | (u16 length | DER)* | [MAC: 32 B key id] | proof
 *
 * type: 1 SYN and 2 SYN-ACK with a signature proof (64 B ECDSA P-256 r||s over SHA-256); 3 SYN and
 * 4 SYN-ACK with a MAC proof (32 B HMAC-SHA-256) under the pair key both ends derive by static ECDH
 * from their SVID keys — the warm handshake: only the two key holders can compute it, so it proves
 * possession to the peer at the cost of a hash. The key id names the recipient certificate (chain
 * digest) the pair key was derived against. Either proof covers a context string, every byte before
 * it and the 4-tuple, always written client-first, so a token is valid on exactly one connection.
 */
import {
  createHash,
  createHmac,
  diffieHellman,
  hkdfSync,
  randomBytes,
  sign,
  timingSafeEqual,
  verify,
} from "node:crypto";
import type { KeyObject } from "node:crypto";
import { isIPv4, isIPv6 } from "node:net";

export const TOKEN_VERSION = 1;
export const NONCE_BYTES = 16;
const SIGNATURE_BYTES = 64;
const MAC_BYTES = 32;
const KEY_ID_BYTES = 32;
const CONTEXT = Buffer.from("sigil fast-path token v1\0");

export type TokenType = "syn" | "syn-ack";
export type ProofKind = "signature" | "mac";
const TYPE_CODE: Record<ProofKind, Record<TokenType, number>> = {
  signature: { syn: 1, "syn-ack": 2 },
  mac: { syn: 3, "syn-ack": 4 },
};

/** The connection a token is bound to, client side first. */
export interface FourTuple {
  readonly clientAddress: string;
  readonly clientPort: number;
  readonly serverAddress: string;
  readonly serverPort: number;
}

export interface DecodedToken {
  readonly type: TokenType;
  readonly nonce: Buffer;
  readonly timestampMs: number;
  /** SYN-ACK only: the client's nonce this answer is bound to. */
  readonly echoNonce: Buffer | null;
  readonly chain: readonly Buffer[];
  /** The certificate section as sent (count and length-prefixed DER): equal bytes, equal chain. */
  readonly chainBytes: Buffer;
  readonly proofKind: ProofKind;
  /** MAC proof only: digest of the recipient chain the pair key was derived against. */
  readonly keyId: Buffer | null;
  /** Bytes covered by the proof (before the tuple is appended). */
  readonly signedPart: Buffer;
  /** The proof: an ECDSA signature or a MAC, per `proofKind`. */
  readonly signature: Buffer;
}

/** Why a token was refused: stable names for flow records, metrics and tests. */
export type TokenRejection =
  | "malformed"
  | "wrong-type"
  | "expired"
  | "from-future"
  | "untrusted"
  | "bad-signature"
  | "replayed"
  | "nonce-mismatch"
  | "revoked"
  | "unknown-key";

export class TokenError extends Error {
  override readonly name = "TokenError";
  constructor(
    readonly reason: TokenRejection,
    message: string,
  ) {
    super(message);
  }
}

/** Parsed addresses, memoized: handshakes repeat the same few peers and parsing shows up in profiles. */
const addressCache = new Map<string, Buffer>();
const MAX_CACHED_ADDRESSES = 4096;

function addressBytes(address: string): Buffer {
  const cached = addressCache.get(address);
  if (cached) return cached;
  const parsed = parseAddress(address);
  if (addressCache.size >= MAX_CACHED_ADDRESSES) addressCache.clear();
  addressCache.set(address, parsed);
  return parsed;
}

function parseAddress(address: string): Buffer {
  if (isIPv4(address)) return Buffer.from(address.split(".").map(Number));
  if (!isIPv6(address)) throw new TokenError("malformed", `not an IP address: ${address}`);
  // Expand "::" and an embedded dotted quad (as inet_ntop prints IPv4-mapped addresses).
  const words = (part: string): number[] =>
    part === ""
      ? []
      : part.split(":").flatMap((w) => {
          if (!w.includes(".")) return [parseInt(w, 16)];
          const [a = 0, b = 0, c = 0, d = 0] = w.split(".").map(Number);
          return [(a << 8) | b, (c << 8) | d];
        });
  const gap = address.indexOf("::");
  let all: number[];
  if (gap === -1) {
    all = words(address);
  } else {
    const head = words(address.slice(0, gap));
    const tail = words(address.slice(gap + 2));
    all = [...head, ...new Array<number>(8 - head.length - tail.length).fill(0), ...tail];
  }
  const out = Buffer.alloc(16);
  all.forEach((w, i) => out.writeUInt16BE(w, i * 2));
  return out;
}

function tupleBytes(tuple: FourTuple): Buffer {
  const c = addressBytes(tuple.clientAddress);
  const s = addressBytes(tuple.serverAddress);
  const out = Buffer.allocUnsafe(1 + c.length + s.length + 4);
  out[0] = c.length;
  c.copy(out, 1);
  s.copy(out, 1 + c.length);
  out.writeUInt16BE(tuple.clientPort, 1 + c.length + s.length);
  out.writeUInt16BE(tuple.serverPort, 3 + c.length + s.length);
  return out;
}

function signedMessage(signedPart: Buffer, tuple: FourTuple): Buffer {
  return Buffer.concat([CONTEXT, signedPart, tupleBytes(tuple)]);
}

/** The MAC proof over the same message as the signature, fed in pieces rather than copied into one. */
function macOver(key: Buffer, signedPart: Buffer, tuple: FourTuple): Buffer {
  return createHmac("sha256", key).update(CONTEXT).update(signedPart).update(tupleBytes(tuple)).digest();
}

/** The certificate section of a token (count, then length-prefixed DER each), built once per chain. */
const chainSections = new WeakMap<readonly Buffer[], Buffer>();

export function chainSection(chain: readonly Buffer[]): Buffer {
  const cached = chainSections.get(chain);
  if (cached) return cached;
  const section = Buffer.allocUnsafe(1 + chain.reduce((n, der) => n + 2 + der.length, 0));
  section[0] = chain.length;
  let at = 1;
  for (const der of chain) {
    section.writeUInt16BE(der.length, at);
    der.copy(section, at + 2);
    at += 2 + der.length;
  }
  chainSections.set(chain, section);
  return section;
}

export interface TokenSigner {
  /** The SVID chain, leaf first, DER. */
  readonly chain: readonly Buffer[];
  readonly privateKey: KeyObject;
}

/** Nonces are cut from a pool refilled 256 at a time: one CSPRNG call instead of one per handshake. */
let noncePool = Buffer.alloc(0);
let noncePoolAt = 0;

export function newNonce(): Buffer {
  if (noncePoolAt + NONCE_BYTES > noncePool.length) {
    noncePool = randomBytes(NONCE_BYTES * 256);
    noncePoolAt = 0;
  }
  const nonce = Buffer.from(noncePool.subarray(noncePoolAt, noncePoolAt + NONCE_BYTES));
  noncePoolAt += NONCE_BYTES;
  return nonce;
}

/** Encodes and signs a token for `tuple`. */
export function encodeToken(
  signer: TokenSigner,
  fields: {
    type: TokenType;
    nonce: Buffer;
    timestampMs: number;
    echoNonce?: Buffer;
    tuple: FourTuple;
    /** Warm handshake: prove possession with a MAC under this pair key instead of a signature. */
    mac?: { key: Buffer; keyId: Buffer };
  },
): Buffer {
  if (fields.nonce.length !== NONCE_BYTES) throw new RangeError(`nonce must be ${NONCE_BYTES} bytes`);
  if (fields.type === "syn-ack" && fields.echoNonce?.length !== NONCE_BYTES) {
    throw new RangeError("a SYN-ACK token needs the client's nonce");
  }
  if (signer.chain.length === 0 || signer.chain.length > 4)
    throw new RangeError("chain must hold 1..4 certificates");
  if (fields.mac && fields.mac.keyId.length !== KEY_ID_BYTES)
    throw new RangeError(`key id must be ${KEY_ID_BYTES} bytes`);
  const chain = chainSection(signer.chain);
  const echo = fields.type === "syn-ack" ? NONCE_BYTES : 0;
  const signedLength = 2 + NONCE_BYTES + 8 + echo + chain.length + (fields.mac ? KEY_ID_BYTES : 0);
  const token = Buffer.allocUnsafe(signedLength + (fields.mac ? MAC_BYTES : SIGNATURE_BYTES));
  token[0] = TOKEN_VERSION;
  token[1] = TYPE_CODE[fields.mac ? "mac" : "signature"][fields.type];
  fields.nonce.copy(token, 2);
  let at = 2 + NONCE_BYTES;
  token.writeBigUInt64BE(BigInt(fields.timestampMs), at);
  at += 8;
  if (echo > 0) at += (fields.echoNonce as Buffer).copy(token, at);
  at += chain.copy(token, at);
  if (fields.mac) at += fields.mac.keyId.copy(token, at);
  const signedPart = token.subarray(0, signedLength);
  const proof = fields.mac
    ? macOver(fields.mac.key, signedPart, fields.tuple)
    : sign("sha256", signedMessage(signedPart, fields.tuple), {
        key: signer.privateKey,
        dsaEncoding: "ieee-p1363",
      });
  if (proof.length !== token.length - signedLength)
    throw new RangeError(
      `proof is ${proof.length} bytes, the token format needs ${token.length - signedLength}`,
    );
  proof.copy(token, signedLength);
  return token;
}

/** Parses a token without trusting anything in it; throws TokenError("malformed") with the field. */
export function decodeToken(bytes: Buffer): DecodedToken {
  const need = (at: number, n: number, what: string): void => {
    if (at + n > bytes.length) throw new TokenError("malformed", `token truncated in ${what}`);
  };
  need(0, 2 + NONCE_BYTES + 8, "header");
  if (bytes[0] !== TOKEN_VERSION) throw new TokenError("malformed", `token version ${bytes[0]} unsupported`);
  const typeCode = bytes[1] as number;
  if (typeCode < 1 || typeCode > 4) throw new TokenError("malformed", `token type ${typeCode} unknown`);
  const type: TokenType = typeCode % 2 === 1 ? "syn" : "syn-ack";
  const proofKind: ProofKind = typeCode > 2 ? "mac" : "signature";
  let at = 2;
  const nonce = bytes.subarray(at, at + NONCE_BYTES);
  at += NONCE_BYTES;
  const ts = bytes.readBigUInt64BE(at);
  at += 8;
  if (ts > BigInt(Number.MAX_SAFE_INTEGER)) throw new TokenError("malformed", "token timestamp out of range");
  let echoNonce: Buffer | null = null;
  if (type === "syn-ack") {
    need(at, NONCE_BYTES, "echoed nonce");
    echoNonce = bytes.subarray(at, at + NONCE_BYTES);
    at += NONCE_BYTES;
  }
  need(at, 1, "certificate count");
  const chainStart = at;
  const count = bytes[at] as number;
  at += 1;
  if (count < 1 || count > 4)
    throw new TokenError("malformed", `token carries ${count} certificates (1..4 allowed)`);
  const chain: Buffer[] = [];
  for (let i = 0; i < count; i++) {
    need(at, 2, `certificate ${i} length`);
    const len = bytes.readUInt16BE(at);
    at += 2;
    need(at, len, `certificate ${i}`);
    chain.push(bytes.subarray(at, at + len));
    at += len;
  }
  let keyId: Buffer | null = null;
  if (proofKind === "mac") {
    need(at, KEY_ID_BYTES, "key id");
    keyId = bytes.subarray(at, at + KEY_ID_BYTES);
    at += KEY_ID_BYTES;
  }
  const proofBytes = proofKind === "mac" ? MAC_BYTES : SIGNATURE_BYTES;
  if (bytes.length - at !== proofBytes) {
    throw new TokenError(
      "malformed",
      `token ${proofKind} is ${bytes.length - at} bytes, expected ${proofBytes}`,
    );
  }
  return {
    type,
    nonce,
    timestampMs: Number(ts),
    echoNonce,
    chain,
    chainBytes: bytes.subarray(chainStart, chainStart + 1 + chain.reduce((n, der) => n + 2 + der.length, 0)),
    proofKind,
    keyId,
    signedPart: bytes.subarray(0, at),
    signature: bytes.subarray(at),
  };
}

/** Checks the proof of possession: the token was signed by `publicKey` for exactly this connection. */
export function verifyPossession(token: DecodedToken, publicKey: KeyObject, tuple: FourTuple): boolean {
  return verify(
    "sha256",
    signedMessage(token.signedPart, tuple),
    { key: publicKey, dsaEncoding: "ieee-p1363" },
    token.signature,
  );
}

/** Checks a MAC proof under the pair key for exactly this connection (constant-time compare). */
export function verifyMac(token: DecodedToken, key: Buffer, tuple: FourTuple): boolean {
  const expected = macOver(key, token.signedPart, tuple);
  return expected.length === token.signature.length && timingSafeEqual(expected, token.signature);
}

/**
 * The pair key two workloads share: HKDF-SHA-256 over their static ECDH secret (SVID keys), salted
 * with both chain digests in sorted order so each side derives the same key.
 */
export function derivePairKey(
  privateKey: KeyObject,
  peerPublicKey: KeyObject,
  localDigest: string,
  peerDigest: string,
): Buffer {
  const secret = diffieHellman({ privateKey, publicKey: peerPublicKey });
  const salt = Buffer.from([localDigest, peerDigest].sort().join(""), "hex");
  return Buffer.from(hkdfSync("sha256", secret, salt, "sigil fast-path pair key v1", 32));
}

/** Cache key of a presented chain: SHA-256 over every certificate, length-prefixed. */
export function chainDigest(chain: readonly Buffer[]): string {
  const h = createHash("sha256");
  for (const der of chain) {
    const len = Buffer.alloc(2);
    len.writeUInt16BE(der.length);
    h.update(len).update(der);
  }
  return h.digest("hex");
}
