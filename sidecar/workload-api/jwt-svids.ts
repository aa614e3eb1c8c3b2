/** One JWT-SVID as the control plane signed it for this sidecar's workload. */
export interface SignedJwtSvid {
  readonly spiffeId: string;
  readonly token: string;
  readonly expiresAt: Date;
}

/** Asks the control plane (over the sidecar's mTLS) for a JWT-SVID; the subject is the sidecar's own. */
export type JwtSvidSigner = (audience: readonly string[]) => Promise<SignedJwtSvid>;

interface Entry {
  readonly svid: SignedJwtSvid;
  /** Half the token's life: after this a caller gets a fresh one, so none is handed out nearly spent. */
  readonly renewAtMs: number;
}

/** Distinct audience sets remembered; past this the oldest is forgotten. */
const MAX_ENTRIES = 64;

/**
 * The workload's JWT-SVIDs by audience set. A workload asks for a token per request it sends, often
 * for the same audience; each is signed by the control plane, so a token is reused until half its
 * life has passed, and concurrent asks for one audience set share one signing.
 */
export class JwtSvidCache {
  private readonly entries = new Map<string, Entry>();
  private readonly inflight = new Map<string, Promise<SignedJwtSvid>>();

  constructor(
    private readonly sign: JwtSvidSigner,
    private readonly now: () => number = Date.now,
  ) {}

  /** A JWT-SVID for `spiffeId` naming exactly these audiences (order and repeats do not matter). */
  get(spiffeId: string, audience: readonly string[]): Promise<SignedJwtSvid> {
    const unique = [...new Set(audience)].sort();
    const key = JSON.stringify([spiffeId, unique]);
    const entry = this.entries.get(key);
    if (entry && this.now() < entry.renewAtMs) return Promise.resolve(entry.svid);
    let pending = this.inflight.get(key);
    if (!pending) {
      const issuedAtMs = this.now();
      pending = this.sign(unique)
        .then((svid) => {
          // The sidecar renewed into another identity meanwhile: never cache a token under the wrong one.
          if (svid.spiffeId !== spiffeId) return svid;
          this.entries.delete(key);
          this.entries.set(key, {
            svid,
            renewAtMs: issuedAtMs + (svid.expiresAt.getTime() - issuedAtMs) / 2,
          });
          while (this.entries.size > MAX_ENTRIES)
            this.entries.delete(this.entries.keys().next().value as string);
          return svid;
        })
        .finally(() => this.inflight.delete(key));
      this.inflight.set(key, pending);
    }
    return pending;
  }
}
