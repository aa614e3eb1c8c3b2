/**
 * Verifies a peer's handshake token: well-formed, of the expected type, fresh (timestamp inside the
 * window), a chain that verifies as an SVID against the trust bundle and revocation list (cached by
 * chain digest), a proof-of-possession signature for this exact 4-tuple, a nonce never seen before
 * in the window, and — for a SYN-ACK — bound to a nonce this side sent. Any failure is a TokenError
 * with a stable reason; nothing here decides policy.
 */
import { chainValidUntil } from "../../core/svid/chain-expiry.ts";
import type { TrustBundle } from "../../core/svid/bundle.ts";
import type { RevocationIndex } from "../../core/svid/revocation.ts";
import { SvidVerificationError, verifySvid } from "../../core/svid/verify.ts";
import type { WorkloadIdentity } from "../../core/identity.ts";
import { IdentityCache } from "./identity-cache.ts";
import { TokenError, chainDigest, decodeToken, verifyMac, verifyPossession } from "./token.ts";
import type { KeyObject } from "node:crypto";
import type { DecodedToken, FourTuple, TokenType } from "./token.ts";

export interface TrustState {
  readonly bundle: TrustBundle;
  readonly revocations: RevocationIndex;
}

/**
 * Nonces of accepted tokens (the native warm table's replay cache, shared with the warm path):
 * "replayed" inside the window, "full" when it holds only live nonces and refuses new ones.
 */
export interface NonceStore {
  rememberNonce(nonce: Buffer, nowMs: number): "ok" | "replayed" | "full";
}

export interface VerifierOptions {
  /** How far a token's timestamp may be from this host's clock, either way. */
  readonly windowMs: number;
  readonly identityCacheEntries: number;
  readonly replays: NonceStore;
  readonly now?: () => number;
}

export interface VerifiedToken {
  readonly identity: WorkloadIdentity;
  readonly token: DecodedToken;
  /** Whether the identity came from the cache (a warm handshake). */
  readonly cached: boolean;
  /** Digest of the peer's chain and its public key, for deriving the pair key of later handshakes. */
  readonly digest: string;
  readonly publicKey: KeyObject;
  /** When the peer's chain (or its anchor) stops being valid. */
  readonly validUntilMs: number;
}

/**
 * Resolves the pair key for a MAC proof: `keyId` names one of this side's certificates; null when
 * this side holds no such key (rotated away, or never ours).
 */
export type PairKeyResolver = (keyId: Buffer, peerDigest: string, peerPublicKey: KeyObject) => Buffer | null;

/**
 * Chain digests of recently seen certificate sections, so a peer presenting the same chain again
 * costs a byte comparison instead of a SHA-256 over its certificates. Keyed by the section's tail
 * (the leaf's signature bytes) and length; a hit counts only when every byte is equal.
 */
class ChainDigestMemo {
  private readonly entries = new Map<string, { bytes: Buffer; digest: string }>();

  constructor(private readonly maxEntries: number) {}

  digestOf(token: DecodedToken): string {
    const bytes = token.chainBytes;
    const key = `${bytes.length}:${bytes.subarray(-24).toString("latin1")}`;
    const known = this.entries.get(key);
    if (known?.bytes.equals(bytes)) return known.digest;
    const digest = chainDigest(token.chain);
    this.entries.delete(key);
    this.entries.set(key, { bytes: Buffer.from(bytes), digest });
    if (this.entries.size > this.maxEntries) this.entries.delete(this.entries.keys().next().value as string);
    return digest;
  }
}

export class TokenVerifier {
  private trust: TrustState;
  readonly identities: IdentityCache;
  private readonly digests: ChainDigestMemo;
  private readonly now: () => number;

  constructor(
    trust: TrustState,
    private readonly options: VerifierOptions,
  ) {
    this.trust = trust;
    this.identities = new IdentityCache(options.identityCacheEntries);
    this.digests = new ChainDigestMemo(options.identityCacheEntries);
    this.now = options.now ?? Date.now;
  }

  /** New trust bundle or revocation list: every cached verification is void. */
  setTrust(trust: TrustState): void {
    this.trust = trust;
    this.identities.clear();
  }

  verify(
    bytes: Buffer,
    expected: TokenType,
    tuple: FourTuple,
    sentNonces?: readonly Buffer[],
    pairKey?: PairKeyResolver,
  ): VerifiedToken {
    const now = this.now();
    const token = decodeToken(bytes);
    if (token.type !== expected)
      throw new TokenError("wrong-type", `expected a ${expected} token, got ${token.type}`);
    if (token.timestampMs < now - this.options.windowMs) {
      throw new TokenError(
        "expired",
        `token is ${now - token.timestampMs} ms old (window ${this.options.windowMs} ms)`,
      );
    }
    if (token.timestampMs > now + this.options.windowMs) {
      throw new TokenError("from-future", `token is ${token.timestampMs - now} ms in the future`);
    }
    if (expected === "syn-ack") {
      const echo = token.echoNonce as Buffer;
      if (!sentNonces?.some((n) => n.equals(echo))) {
        throw new TokenError("nonce-mismatch", "SYN-ACK token is not bound to a nonce this side sent");
      }
    }

    const digest = this.digests.digestOf(token);
    // Keyed by purpose too: a chain verified as a server's is checked again before it counts as a client's.
    const cacheKey = `${expected}|${digest}`;
    let entry = this.identities.get(cacheKey, now);
    const cached = entry !== undefined;
    if (!entry) {
      try {
        const svid = verifySvid(token.chain, {
          bundle: this.trust.bundle,
          revocations: this.trust.revocations,
          purpose: expected === "syn" ? "client" : "server",
          now: new Date(now),
        });
        entry = {
          identity: svid.identity,
          publicKey: svid.leaf.publicKey,
          // The whole chain and its anchor bound the cache, not only the leaf.
          validUntilMs: chainValidUntil(token.chain, this.trust.bundle),
        };
      } catch (err) {
        if (err instanceof SvidVerificationError) {
          const reason =
            err.reason === "revoked" ? "revoked" : err.reason === "expired" ? "expired" : "untrusted";
          throw new TokenError(reason, `peer certificate refused (${err.reason}): ${err.message}`);
        }
        throw new TokenError("malformed", `peer certificate unusable: ${(err as Error).message}`);
      }
    }
    let valid: boolean;
    if (token.proofKind === "mac") {
      const key = pairKey?.(token.keyId as Buffer, digest, entry.publicKey) ?? null;
      if (!key) throw new TokenError("unknown-key", "MAC proof made for a key this side does not hold");
      valid = verifyMac(token, key, tuple);
      if (!valid) throw new TokenError("bad-signature", "MAC proof does not verify for this connection");
    } else {
      try {
        valid = verifyPossession(token, entry.publicKey, tuple);
      } catch (err) {
        throw new TokenError("bad-signature", `signature check failed: ${(err as Error).message}`);
      }
      if (!valid) {
        throw new TokenError(
          "bad-signature",
          "proof-of-possession signature does not verify for this connection",
        );
      }
    }
    // Cache only after the key proved itself, so junk chains cannot evict good entries.
    if (!cached) this.identities.set(cacheKey, entry);

    const seen = this.options.replays.rememberNonce(token.nonce, now);
    if (seen === "replayed") throw new TokenError("replayed", "token nonce already used inside the window");
    if (seen === "full")
      throw new TokenError("replayed", "replay cache full; refusing new tokens until nonces expire");
    return {
      identity: entry.identity,
      token,
      cached,
      digest,
      publicKey: entry.publicKey,
      validUntilMs: entry.validUntilMs,
    };
  }
}
