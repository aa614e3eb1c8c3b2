import * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";
import { JwtSvidError, jwtAudienceProblem, verifyJwtSvidToken } from "../../core/svid/jwt.ts";
import type { WorkloadCredentials } from "../identity/rotation.ts";
import { CallRefusal, admitCaller } from "./caller.ts";
import type { CallerPolicy } from "./caller.ts";
import type { JwtSvidCache } from "./jwt-svids.ts";
import { jwtBundlesResponse, toStruct, x509BundlesResponse, x509SvidResponse } from "./messages.ts";

/** The sidecar's identity as the Workload API serves it; `rotate` fires on a new SVID or bundle. */
export interface IdentitySource {
  current(): WorkloadCredentials;
  on(event: "rotate", listener: () => void): unknown;
  off(event: "rotate", listener: () => void): unknown;
}

export interface WorkloadApiDeps {
  readonly identity: IdentitySource;
  readonly jwt: JwtSvidCache;
  readonly callers: CallerPolicy;
  readonly log: Logger;
}

type Call = { metadata: grpc.Metadata; getPeer(): string };

function refuse(
  deps: WorkloadApiDeps,
  rpc: string,
  err: unknown,
): grpc.ServiceError | Partial<grpc.StatusObject> {
  if (err instanceof CallRefusal) {
    deps.log.warn(
      { rpc, code: grpc.status[err.code], uid: err.caller?.uid, pid: err.caller?.pid, reason: err.message },
      "workload API call refused",
    );
    return { code: err.code, details: err.message };
  }
  deps.log.error({ rpc, err: (err as Error).message }, "workload API call failed");
  return { code: grpc.status.INTERNAL, details: "internal error" };
}

/**
 * A server stream that sends the full current message at once and again whenever `changed` says
 * the identity moved on (a rotated SVID, a new bundle), until the client goes away.
 */
function serveUpdates<T>(
  deps: WorkloadApiDeps,
  rpc: string,
  call: grpc.ServerWritableStream<unknown, T>,
  build: (credentials: WorkloadCredentials) => T,
  changed: (previous: WorkloadCredentials, next: WorkloadCredentials) => boolean,
): void {
  let sent: WorkloadCredentials;
  try {
    const caller = admitCaller(call, deps.callers);
    sent = deps.identity.current();
    call.write(build(sent));
    deps.log.debug({ rpc, uid: caller.uid, pid: caller.pid }, "workload API stream opened");
  } catch (err) {
    call.emit("error", refuse(deps, rpc, err));
    return;
  }
  const onRotate = (): void => {
    const next = deps.identity.current();
    if (!changed(sent, next)) return;
    sent = next;
    call.write(build(next));
  };
  deps.identity.on("rotate", onRotate);
  const stop = (): void => {
    deps.identity.off("rotate", onRotate);
  };
  call.once("cancelled", stop);
  call.once("close", stop);
  call.once("finish", stop);
}

const svidChanged = (a: WorkloadCredentials, b: WorkloadCredentials): boolean =>
  a.certChain !== b.certChain || a.bundle.sequence !== b.bundle.sequence;
const bundleChanged = (a: WorkloadCredentials, b: WorkloadCredentials): boolean =>
  a.bundle.sequence !== b.bundle.sequence;

interface JwtSvidRequest {
  audience: string[];
  spiffeId: string;
}
interface ValidateRequest {
  audience: string;
  svid: string;
}

function unary<Req, Res>(
  deps: WorkloadApiDeps,
  rpc: string,
  handle: (request: Req, credentials: WorkloadCredentials) => Promise<Res>,
): grpc.handleUnaryCall<Req, Res> {
  return (call, callback) => {
    (async () => {
      admitCaller(call as Call, deps.callers);
      return handle(call.request, deps.identity.current());
    })().then(
      (response) => callback(null, response),
      (err: unknown) => callback(refuse(deps, rpc, err)),
    );
  };
}

async function fetchJwtSvid(
  deps: WorkloadApiDeps,
  request: JwtSvidRequest,
  credentials: WorkloadCredentials,
) {
  const problem = jwtAudienceProblem(request.audience);
  if (problem) throw new CallRefusal(grpc.status.INVALID_ARGUMENT, problem);
  if (request.spiffeId !== "" && request.spiffeId !== credentials.spiffeId)
    throw new CallRefusal(
      grpc.status.PERMISSION_DENIED,
      `no JWT-SVID for ${request.spiffeId}: this workload is ${credentials.spiffeId}`,
    );
  let svid;
  try {
    svid = await deps.jwt.get(credentials.spiffeId, request.audience);
  } catch (err) {
    throw new CallRefusal(
      grpc.status.UNAVAILABLE,
      `the control plane did not sign a JWT-SVID: ${(err as Error).message}`,
    );
  }
  if (svid.spiffeId !== credentials.spiffeId)
    throw new CallRefusal(
      grpc.status.UNAVAILABLE,
      "the workload's identity changed while signing; ask again",
    );
  return { svids: [{ spiffeId: svid.spiffeId, svid: svid.token, hint: "" }] };
}

async function validateJwtSvid(request: ValidateRequest, credentials: WorkloadCredentials) {
  if (request.audience === "") throw new CallRefusal(grpc.status.INVALID_ARGUMENT, "audience is required");
  if (request.svid === "") throw new CallRefusal(grpc.status.INVALID_ARGUMENT, "svid is required");
  try {
    const verified = await verifyJwtSvidToken(request.svid, {
      bundle: credentials.bundle,
      audience: request.audience,
    });
    return { spiffeId: verified.spiffeId, claims: toStruct(verified.claims) };
  } catch (err) {
    if (err instanceof JwtSvidError) throw new CallRefusal(grpc.status.INVALID_ARGUMENT, err.message);
    throw err;
  }
}

/**
 * Handlers of `SpiffeWorkloadAPI` for the X.509-SVID and JWT-SVID profiles. The WIT-SVID profile is
 * left out, so its calls are answered UNIMPLEMENTED as the specification asks of servers without it.
 */
export function workloadApiHandlers(deps: WorkloadApiDeps): grpc.UntypedServiceImplementation {
  return {
    FetchX509SVID: (call: grpc.ServerWritableStream<unknown, unknown>) =>
      serveUpdates(deps, "FetchX509SVID", call, x509SvidResponse, svidChanged),
    FetchX509Bundles: (call: grpc.ServerWritableStream<unknown, unknown>) =>
      serveUpdates(deps, "FetchX509Bundles", call, (c) => x509BundlesResponse(c.bundle), bundleChanged),
    FetchJWTBundles: (call: grpc.ServerWritableStream<unknown, unknown>) =>
      serveUpdates(deps, "FetchJWTBundles", call, (c) => jwtBundlesResponse(c.bundle), bundleChanged),
    FetchJWTSVID: unary<JwtSvidRequest, unknown>(deps, "FetchJWTSVID", (request, credentials) =>
      fetchJwtSvid(deps, request, credentials),
    ),
    ValidateJWTSVID: unary<ValidateRequest, unknown>(deps, "ValidateJWTSVID", validateJwtSvid),
  };
}
