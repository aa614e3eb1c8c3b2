import { createHash } from "node:crypto";

/**
 * The `x-forwarded-client-cert` (XFCC) field: how the application learns who called it. Only the
 * sidecar may say so: every XFCC field a client sends is removed on both paths (inbound, so a caller
 * cannot claim another identity; outbound, so the workload cannot claim one towards an upstream),
 * and on the inbound path a caller verified by mTLS gets one built from its certificate:
 *
 *     By=<this workload's SPIFFE ID>;Hash=<hex SHA-256 of the caller's leaf DER>;URI=<caller's SPIFFE ID>
 */

export const FORWARDED_CLIENT_CERT = "x-forwarded-client-cert";

/** `sanitize_set`: remove what the client sent, set one for a verified mesh caller. `sanitize`: only remove. */
export type ForwardClientCert = "sanitize_set" | "sanitize";

// Elements are separated by `,`, pairs by `;`, keys from values by `=`: a value holding any of them
// (SPIFFE ID paths may) is a quoted string, or a reader would split it into pairs of its own.
const NEEDS_QUOTES = /[,;="\\]/;

function xfccValue(value: string): string {
  return NEEDS_QUOTES.test(value) ? `"${value.replace(/["\\]/g, "\\$&")}"` : value;
}

/** The XFCC value for a caller verified by mTLS. */
export function forwardedClientCert(self: string, peerLeafDer: Buffer, peer: string): string {
  const hash = createHash("sha256").update(peerLeafDer).digest("hex");
  return `By=${xfccValue(self)};Hash=${hash};URI=${xfccValue(peer)}`;
}

/**
 * Request fields as the application receives them (lower-cased names): without the client's XFCC,
 * with `value` when set. Policy decides on these, so a header rule cannot be met by a forged XFCC.
 */
export function withForwardedClientCert<T>(
  headers: Readonly<Record<string, T>>,
  value: string | undefined,
): Readonly<Record<string, T | string>> {
  if (value === undefined && !Object.hasOwn(headers, FORWARDED_CLIENT_CERT)) return headers;
  const out: Record<string, T | string> = { ...headers };
  if (value === undefined) delete out[FORWARDED_CLIENT_CERT];
  else out[FORWARDED_CLIENT_CERT] = value;
  return out;
}
