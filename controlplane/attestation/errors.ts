/**
 * Why attestation failed; the gRPC layer maps these to PERMISSION_DENIED / UNAUTHENTICATED, and
 * `attestor-unavailable` (a source the proof must be checked against cannot answer) to UNAVAILABLE.
 */
export type AttestationFailure =
  | "unknown-token"
  | "token-used"
  | "token-expired"
  | "invalid-sa-token"
  | "not-configured"
  | "invalid-facts"
  | "invalid-renewal"
  | "revoked"
  | "attestor-unavailable";

export class AttestationError extends Error {
  constructor(
    readonly failure: AttestationFailure,
    message: string,
  ) {
    super(message);
  }
}
