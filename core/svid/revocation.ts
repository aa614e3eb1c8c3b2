/**
 * Revocation state as every enforcement point holds it. Two kinds of entry:
 * - a revoked workload, named by SPIFFE ID: every certificate carrying that ID is refused (the
 *   control plane never issues to it again);
 * - a revoked certificate, named by serial: only that certificate is refused, and the workload may
 *   attest again for a new one (a leaked key, a certificate issued in error).
 * Either entry can be dropped after `expiresAtMs`, when every certificate it covers has expired anyway.
 */
import { z } from "zod";

export interface RevocationEntry {
  readonly spiffeId: string;
  readonly revokedAtMs: number;
  readonly expiresAtMs: number;
  readonly reason: string;
}

/** One certificate revoked by serial; `spiffeId` is the one it carries when known, else "". */
export interface RevokedCertificate {
  /** Canonical form (`canonicalSerial`): lower-case hex without leading zeros. */
  readonly serial: string;
  readonly spiffeId: string;
  readonly revokedAtMs: number;
  /** The certificate's notAfter: past it the entry is pruned. */
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

export const revokedCertificateSchema = z.object({
  serial: z.string().regex(/^[0-9a-f]+$/, { error: "serial must be canonical lower-case hex" }),
  spiffeId: z.string(),
  revokedAtMs: z.number(),
  expiresAtMs: z.number(),
  reason: z.string(),
}) satisfies z.ZodType<RevokedCertificate>;

export interface RevocationList {
  readonly trustDomain: string;
  /** Increases on every change, so a receiver can ignore stale copies. */
  readonly sequence: number;
  /** Revoked workloads. */
  readonly entries: readonly RevocationEntry[];
  /** Revoked single certificates; absent means none. */
  readonly certificates?: readonly RevokedCertificate[];
}

/** Either kind of entry that refuses a certificate. */
export type Revocation = RevocationEntry | RevokedCertificate;

/** What a revocation lookup needs of a certificate: the SPIFFE ID it carries and its serial (hex). */
export interface RevocableCertificate {
  readonly spiffeId: string;
  readonly serial: string;
}

export class SerialError extends Error {}

/**
 * A certificate serial as revocation compares it: hex digits (colons, as `openssl x509 -serial` or a
 * browser shows them, and a `0x` prefix are accepted), lower case, without leading zeros, since the
 * same integer is printed with and without them. Throws SerialError naming what is wrong.
 */
export function canonicalSerial(text: string): string {
  const digits = text.trim().replace(/^0x/i, "").replaceAll(":", "").toLowerCase();
  if (digits === "") throw new SerialError("serial is empty");
  if (!/^[0-9a-f]+$/.test(digits)) throw new SerialError(`serial "${text}" is not hexadecimal`);
  const canonical = digits.replace(/^0+(?=.)/, "");
  if (canonical.length > 40)
    throw new SerialError(`serial "${text}" is longer than 20 bytes (RFC 5280 4.1.2.2)`);
  return canonical;
}

/** The same as canonicalSerial for a serial read from a certificate, where malformed text matches nothing. */
export function serialKey(serial: string): string {
  return serial.toLowerCase().replace(/^0+(?=.)/, "");
}

/** Constant-time lookup over a revocation list. */
export class RevocationIndex {
  private readonly byId = new Map<string, RevocationEntry>();
  private readonly bySerial = new Map<string, RevokedCertificate>();

  constructor(readonly list: RevocationList) {
    for (const entry of list.entries) {
      const previous = this.byId.get(entry.spiffeId);
      if (!previous || previous.revokedAtMs < entry.revokedAtMs) this.byId.set(entry.spiffeId, entry);
    }
    for (const entry of list.certificates ?? []) this.bySerial.set(serialKey(entry.serial), entry);
  }

  static empty(trustDomain: string): RevocationIndex {
    return new RevocationIndex({ trustDomain, sequence: 0, entries: [], certificates: [] });
  }

  /**
   * The entry that refuses `cert`, if any: its workload revoked, or this very certificate. Every
   * check of a certificate (handshakes, requests, tunnels, fast-path tokens, renewals, control-plane
   * streams) asks here.
   */
  revoking(cert: RevocableCertificate): Revocation | undefined {
    return (
      this.byId.get(cert.spiffeId) ??
      (this.bySerial.size > 0 && cert.serial !== "" ? this.bySerial.get(serialKey(cert.serial)) : undefined)
    );
  }

  /** The entry revoking the workload `spiffeId` as a whole, if any. */
  revokingWorkload(spiffeId: string): RevocationEntry | undefined {
    return this.byId.get(spiffeId);
  }
}

/** Whether an entry names one certificate rather than a workload. */
export function isCertificateRevocation(entry: Revocation): entry is RevokedCertificate {
  return "serial" in entry;
}

/**
 * "`<id>` was revoked at `<time>` (`<reason>`)", or "certificate `<serial>` of `<id>` was revoked
 * ...": how every refusal of a revoked certificate reads.
 */
export function describeRevocation(entry: Revocation): string {
  const at = entry.revokedAtMs > 0 ? ` at ${new Date(entry.revokedAtMs).toISOString()}` : "";
  if (!isCertificateRevocation(entry)) return `${entry.spiffeId} was revoked${at} (${entry.reason})`;
  const of = entry.spiffeId === "" ? "" : ` of ${entry.spiffeId}`;
  return `certificate ${entry.serial}${of} was revoked${at} (${entry.reason})`;
}
