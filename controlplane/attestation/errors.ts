/** Why attestation failed; the gRPC layer maps these to PERMISSION_DENIED / UNAUTHENTICATED. */
export type AttestationFailure =
  | "unknown-token"
  | "token-used"
  | "token-expired"
  | "invalid-sa-token"
  | "not-configured"
  | "invalid-facts"
  | "invalid-renewal"
  | "revoked";

export class AttestationError extends Error {
  constructor(
    readonly failure: AttestationFailure,
    message: string,
  ) {
    super(message);
  }
}
