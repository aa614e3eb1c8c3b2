/**
 * Verified peer identities keyed by the purpose they were verified for and the digest of the
 * certificate chain they presented (`<purpose>|<digest>`), so a warm handshake skips chain,
 * extension and revocation checks and pays for one proof check.
 * Entries end at the certificate's notAfter; the whole cache is dropped when the trust bundle or the
 * revocation list changes. LRU-bounded.
 */
import type { KeyObject } from "node:crypto";
import type { WorkloadIdentity } from "../../core/identity.ts";

export interface CachedIdentity {
  readonly identity: WorkloadIdentity;
  readonly publicKey: KeyObject;
  /** Milliseconds since the epoch after which the entry must be verified again. */
  readonly validUntilMs: number;
}

export class IdentityCache {
  private readonly entries = new Map<string, CachedIdentity>();
  hits = 0;
  misses = 0;

  constructor(private readonly maxEntries: number) {}

  get(key: string, nowMs: number): CachedIdentity | undefined {
    const entry = this.entries.get(key);
    if (!entry || entry.validUntilMs <= nowMs) {
      if (entry) this.entries.delete(key);
      this.misses++;
      return undefined;
    }
    // Refresh recency.
    this.entries.delete(key);
    this.entries.set(key, entry);
    this.hits++;
    return entry;
  }

  set(key: string, entry: CachedIdentity): void {
    this.entries.delete(key);
    this.entries.set(key, entry);
    while (this.entries.size > this.maxEntries) {
      const oldest = this.entries.keys().next().value as string;
      this.entries.delete(oldest);
    }
  }

  clear(): void {
    this.entries.clear();
  }

  get size(): number {
    return this.entries.size;
  }
}
