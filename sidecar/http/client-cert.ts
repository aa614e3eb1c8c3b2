import { createHash } from "node:crypto";
import { isUserFieldName } from "../user-access/user-fields.ts";

/**
 * The `x-forwarded-client-cert` (XFCC) field: how the application learns who called it. Only the
 * sidecar may say so: every XFCC field a client sends is removed on both paths (inbound, so a caller
 * cannot claim another identity; outbound, so the workload cannot claim one towards an upstream),
 * and on the inbound path a caller verified by mTLS gets one built from its certificate:
 *
 *     By=<this workload's SPIFFE ID>;Hash=<hex SHA-256 of the caller's leaf DER>;URI=<caller's SPIFFE ID>
 */

export const FORWARDED_CLIENT_CERT = "x-forwarded-client-cert";

/**
 * Whether a lower-cased field name is XFCC for the application: with `_` in place of any `-` too,
 * since CGI-style readers (WSGI, Rack, Django's META) turn both into HTTP_X_FORWARDED_CLIENT_CERT
 * and join the values, so such a field would put the client's words next to the sidecar's.
 */
export function isForwardedClientCertName(lower: string): boolean {
  return (
    lower.length === FORWARDED_CLIENT_CERT.length && lower.replaceAll("_", "-") === FORWARDED_CLIENT_CERT
  );
}

/**
 * Fields only the sidecar may set towards an application: XFCC, and the signed-in user's
 * (`../user-access/user-fields.ts`). A client's copy of either is removed wherever XFCC is.
 */
export function isSidecarFieldName(lower: string): boolean {
  return isForwardedClientCertName(lower) || isUserFieldName(lower);
}

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
 * Request fields as the application receives them (lower-cased names): without the client's XFCC
 * and user fields (in any spelling `isSidecarFieldName` takes), with `value` as XFCC when set and
 * the verified user's fields when given. Policy decides on these, so a header rule cannot be met
 * by a forged XFCC or user field.
 */
export function withForwardedClientCert<T>(
  headers: Readonly<Record<string, T>>,
  value: string | undefined,
  userFields?: Readonly<Record<string, string>>,
): Readonly<Record<string, T | string>> {
  const forged = Object.keys(headers).filter(isSidecarFieldName);
  if (value === undefined && userFields === undefined && forged.length === 0) return headers;
  const out: Record<string, T | string> = { ...headers };
  for (const name of forged) delete out[name];
  if (value !== undefined) out[FORWARDED_CLIENT_CERT] = value;
  if (userFields !== undefined) Object.assign(out, userFields);
  return out;
}
