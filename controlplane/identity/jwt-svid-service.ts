import * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";
import { jwtAudienceProblem } from "../../core/svid/jwt.ts";
import { SvidVerificationError } from "../../core/svid/verify.ts";
import type { WireSignJwtSvidRequest, WireSignJwtSvidResponse } from "../../core/svid/wire.ts";
import { MAX_WORKLOAD_JWT_TTL_SECONDS } from "../ca/authority.ts";
import type { CertificateAuthority } from "../ca/authority.ts";

/** Lifetime of a Workload API JWT-SVID when the sidecar asks for none: a bearer token, so short. */
export const DEFAULT_WORKLOAD_JWT_TTL_SECONDS = 300;

export interface JwtSvidServiceDeps {
  readonly ca: CertificateAuthority;
  /**
   * The SPIFFE ID the call's client certificate proves (chain, bundle, revocations); throws
   * `SvidVerificationError` when it proves none.
   */
  readonly authenticate: (call: grpc.ServerUnaryCall<unknown, unknown>) => string;
  readonly log?: Logger;
}

class Refusal extends Error {
  constructor(
    readonly code: grpc.status,
    message: string,
  ) {
    super(message);
  }
}

function ttlOf(requested: number): number {
  if (requested === 0) return DEFAULT_WORKLOAD_JWT_TTL_SECONDS;
  if (requested > MAX_WORKLOAD_JWT_TTL_SECONDS)
    throw new Refusal(
      grpc.status.INVALID_ARGUMENT,
      `ttl_seconds ${requested} is above the JWT-SVID maximum of ${MAX_WORKLOAD_JWT_TTL_SECONDS}`,
    );
  return requested;
}

function callerOf(deps: JwtSvidServiceDeps, call: grpc.ServerUnaryCall<unknown, unknown>): string {
  try {
    return deps.authenticate(call);
  } catch (err) {
    if (!(err instanceof SvidVerificationError)) throw err;
    const code = err.reason === "revoked" ? grpc.status.PERMISSION_DENIED : grpc.status.UNAUTHENTICATED;
    throw new Refusal(code, `JWT-SVIDs are signed only for a workload's valid SVID: ${err.message}`);
  }
}

/**
 * The `SignJwtSvid` handler of `sigil.v1.IdentityService`: a JWT-SVID whose subject is the SPIFFE ID
 * of the X.509-SVID the caller presented on the connection, never one it names, so a sidecar can
 * obtain tokens for its own workload only. Spread into the service's handlers beside `SignSvid`.
 */
export function jwtSvidServiceHandlers(deps: JwtSvidServiceDeps): grpc.UntypedServiceImplementation {
  return {
    SignJwtSvid: (
      call: grpc.ServerUnaryCall<WireSignJwtSvidRequest, WireSignJwtSvidResponse>,
      callback: grpc.sendUnaryData<WireSignJwtSvidResponse>,
    ) => {
      (async () => {
        const spiffeId = callerOf(deps, call);
        const problem = jwtAudienceProblem(call.request.audience);
        if (problem) throw new Refusal(grpc.status.INVALID_ARGUMENT, problem);
        const issued = await deps.ca.issueWorkloadJwtSvid({
          spiffeId,
          audience: call.request.audience,
          ttlSeconds: ttlOf(call.request.ttlSeconds),
        });
        deps.log?.info(
          { spiffeId, audience: call.request.audience, expiresAt: issued.expiresAt },
          "issued JWT-SVID",
        );
        return { spiffeId, jwtSvid: issued.token, expiresAtUnixMs: issued.expiresAt.getTime() };
      })().then(
        (response) => callback(null, response),
        (err: unknown) => {
          if (err instanceof Refusal) {
            deps.log?.warn({ peer: call.getPeer(), reason: err.message }, "JWT-SVID request refused");
            callback({ code: err.code, details: err.message });
            return;
          }
          deps.log?.error({ err, peer: call.getPeer() }, "JWT-SVID signing failed");
          callback({ code: grpc.status.INTERNAL, details: "internal error while signing" });
        },
      );
    },
  };
}
