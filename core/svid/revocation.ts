/**
 * Revocation state as every enforcement point holds it. A revoked workload is named by SPIFFE ID and
 * every certificate carrying that ID is refused (the control plane never issues to it again). The
 * entry can be dropped after `expiresAtMs`, when every certificate issued before the revocation has
 * expired anyway.
 */
import { z } from "zod";

export interface RevocationEntry {
  readonly spiffeId: string;
  readonly revokedAtMs: number;
  readonly expiresAtMs: number;
  readonly reason: string;
}

/** One entry as it crosses a process or file boundary (the registry's state file, the worker relay). */
export const revocationEntrySchema = z.object({
  spiffeId: z.string(),
  revokedAtMs: z.number(),
  expiresAtMs: z.number(),
  reason: z.string(),
}) satisfies z.ZodType<RevocationEntry>;

export interface RevocationList {
  readonly trustDomain: string;
  /** Increases on every change, so a receiver can ignore stale copies. */
  readonly sequence: number;
  readonly entries: readonly RevocationEntry[];
}

/** Constant-time lookup over a revocation list. */
export class RevocationIndex {
  private readonly byId = new Map<string, RevocationEntry>();

  constructor(readonly list: RevocationList) {
    for (const entry of list.entries) {
      const previous = this.byId.get(entry.spiffeId);
      if (!previous || previous.revokedAtMs < entry.revokedAtMs) this.byId.set(entry.spiffeId, entry);
    }
  }

  static empty(trustDomain: string): RevocationIndex {
    return new RevocationIndex({ trustDomain, sequence: 0, entries: [] });
  }

  /** The entry that revokes certificates carrying `spiffeId`, if any. */
  revoking(spiffeId: string): RevocationEntry | undefined {
    return this.byId.get(spiffeId);
  }
}

/** "`<id>` was revoked at `<time>` (`<reason>`)": how every refusal of a revoked identity reads. */
export function describeRevocation(entry: RevocationEntry): string {
  const at = entry.revokedAtMs > 0 ? ` at ${new Date(entry.revokedAtMs).toISOString()}` : "";
  return `${entry.spiffeId} was revoked${at} (${entry.reason})`;
}
