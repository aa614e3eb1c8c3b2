import * as grpc from "@grpc/grpc-js";
import type { PeerCredentials } from "../../native/index.ts";

/** The metadata every Workload API request carries (SPIFFE Workload Endpoint, SSRF hardening). */
export const SECURITY_HEADER = "workload.spiffe.io";

/** A refused call: the gRPC status and the reason sent as its details. */
export class CallRefusal extends Error {
  constructor(
    readonly code: grpc.status,
    message: string,
    readonly caller?: PeerCredentials,
  ) {
    super(message);
  }
}

export interface CallerPolicy {
  /** The workload's uids: only processes running as one of these get anything. */
  readonly allowedUids: ReadonlySet<number>;
  /** The sidecar's own uid, never the workload's. */
  readonly ownUid: number;
  /** The kernel-attested process behind a call's connection. */
  readonly callerOf: (call: { getPeer(): string }) => PeerCredentials | undefined;
}

/**
 * Admits a call or throws `CallRefusal`: the security header first (INVALID_ARGUMENT without it,
 * as the SPIFFE Workload Endpoint requires), then the caller's uid as the kernel recorded it at
 * connect() (PERMISSION_DENIED unless it is one of the workload's, and never the sidecar's own).
 */
export function admitCaller(
  call: { metadata: grpc.Metadata; getPeer(): string },
  policy: CallerPolicy,
): PeerCredentials {
  const header = call.metadata.get(SECURITY_HEADER);
  if (header.length !== 1 || header[0] !== "true")
    throw new CallRefusal(
      grpc.status.INVALID_ARGUMENT,
      `security header missing from request: ${SECURITY_HEADER}: true`,
    );
  const caller = policy.callerOf(call);
  if (!caller)
    throw new CallRefusal(grpc.status.PERMISSION_DENIED, "the caller's process could not be attested");
  if (caller.uid === policy.ownUid)
    throw new CallRefusal(
      grpc.status.PERMISSION_DENIED,
      `uid ${caller.uid} is the sidecar's own and never the workload's`,
      caller,
    );
  if (!policy.allowedUids.has(caller.uid))
    throw new CallRefusal(
      grpc.status.PERMISSION_DENIED,
      `no identity for uid ${caller.uid} (pid ${caller.pid}): not one of the workload's uids`,
      caller,
    );
  return caller;
}
