import { X509Certificate } from "node:crypto";
import type { TrustBundle } from "./bundle.ts";

/**
 * Milliseconds since the epoch at which the first certificate of a verified chain, or of the trust
 * bundle it chains to, stops being valid: how long a verification result may be remembered.
 */
export function chainValidUntil(chain: readonly Buffer[], bundle: TrustBundle): number {
  let earliest = Infinity;
  for (const der of chain) earliest = Math.min(earliest, Date.parse(new X509Certificate(der).validTo));
  for (const root of bundle.x509Authorities) earliest = Math.min(earliest, Date.parse(root.validTo));
  return earliest;
}
