import { createHash } from "node:crypto";
import type { TLSSocket } from "node:tls";
import type { TrustBundle } from "../../core/svid/bundle.ts";
import { chainValidUntil } from "../../core/svid/chain-expiry.ts";
import type { RevocationIndex } from "../../core/svid/revocation.ts";
import { peerChain } from "../../core/svid/tls.ts";
import type { SvidPurpose, VerifiedSvid } from "../../core/svid/verify.ts";
import { SvidVerificationError, verifySvid } from "../../core/svid/verify.ts";

/** Distinct chains remembered per trust bundle; past it the oldest is forgotten. */
const MAX_ENTRIES = 1024;

interface Entry {
  readonly verified: VerifiedSvid;
  /** The earliest notAfter of the presented chain and the bundle's authorities. */
  readonly expiresAtMs: number;
}

function chainKey(chain: readonly Buffer[], purpose: SvidPurpose): string {
  const hash = createHash("sha256").update(purpose);
  for (const der of chain) {
    const length = Buffer.allocUnsafe(4);
    length.writeUInt32BE(der.length);
    hash.update(length).update(der);
  }
  return hash.digest("base64");
}

/**
 * Verifies the SVID chain a TLS peer presented, remembering chains that already passed. Parsing and
 * checking a chain in JavaScript costs more than the handshake's own signatures, and a peer presents
 * the same chain on every connection until it rotates. A remembered result is only reused for the
 * byte-identical chain (SHA-256 over every DER certificate), the same purpose and the same trust
 * bundle object (a new bundle starts an empty cache), and only until the earliest expiry in the chain
 * or the bundle. Revocation is never cached: it is looked up on every connection, and a revoked
 * peer goes through the full verification, which refuses it with the exact reason.
 */
export class PeerVerifier {
  private readonly cache = new WeakMap<TrustBundle, Map<string, Entry>>();

  constructor(private readonly clock: () => Date = () => new Date()) {}

  verify(
    socket: TLSSocket,
    options: {
      readonly bundle: TrustBundle;
      readonly purpose: SvidPurpose;
      readonly revocations: RevocationIndex;
    },
  ): VerifiedSvid {
    return this.verifyChain(peerChain(socket), options);
  }

  /** The same for a chain already read (DER, leaf first). */
  verifyChain(
    chain: readonly Buffer[],
    options: {
      readonly bundle: TrustBundle;
      readonly purpose: SvidPurpose;
      readonly revocations: RevocationIndex;
    },
  ): VerifiedSvid {
    if (chain.length === 0) throw new SvidVerificationError("malformed", "peer presented no certificate");
    let entries = this.cache.get(options.bundle);
    if (!entries) {
      entries = new Map();
      this.cache.set(options.bundle, entries);
    }
    const key = chainKey(chain, options.purpose);
    const now = this.clock();
    const hit = entries.get(key);
    if (
      hit &&
      now.getTime() < hit.expiresAtMs &&
      options.revocations.revoking(hit.verified.identity) === undefined
    ) {
      return hit.verified;
    }
    entries.delete(key);
    const verified = verifySvid(chain, { ...options, now });
    if (entries.size >= MAX_ENTRIES) {
      const oldest = entries.keys().next();
      if (!oldest.done) entries.delete(oldest.value);
    }
    entries.set(key, { verified, expiresAtMs: chainValidUntil(chain, options.bundle) });
    return verified;
  }
}
