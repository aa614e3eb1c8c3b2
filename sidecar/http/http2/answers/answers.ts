import type { IncomingHttpHeaders } from "node:http2";
import type { Decision } from "../../../../core/policy/index.ts";
import { denialBody } from "../../denial.ts";
import { encodeGrpcMessage } from "./grpc-message.ts";

/**
 * The answers the sidecar gives an HTTP/2 stream itself, the same whichever engine relays it: a
 * refusal (403, 400, or a trailers-only gRPC response with status 7 or 3) and an unreachable upstream
 * (502, or gRPC status 14).
 */

const GRPC_PERMISSION_DENIED = 7;
const GRPC_INVALID_ARGUMENT = 3;
const GRPC_UNAVAILABLE = 14;

/** A response: its header fields (`:status` first), an optional body, and what the flow records. */
export interface Answer {
  readonly headers: Readonly<Record<string, string>>;
  readonly body: string | undefined;
  readonly status: number;
  readonly grpcStatus?: number;
}

export function isGrpc(headers: IncomingHttpHeaders): boolean {
  const ct = headers["content-type"];
  return typeof ct === "string" && ct.startsWith("application/grpc");
}

/** The gRPC status a response's headers or trailers carry. */
export function grpcStatusOf(h: Readonly<Record<string, unknown>>): number | undefined {
  const v = h["grpc-status"];
  return typeof v === "string" && /^\d{1,2}$/.test(v) ? Number(v) : undefined;
}

function grpcAnswer(grpcStatus: number, message: string): Answer {
  return {
    headers: {
      ":status": "200",
      "content-type": "application/grpc",
      "grpc-status": String(grpcStatus),
      "grpc-message": encodeGrpcMessage(message),
    },
    body: undefined,
    status: 200,
    grpcStatus,
  };
}

/** The refusal of a denied stream: 400 when policy found the request malformed, 403 otherwise. */
export function refusalAnswer(decision: Decision, grpc: boolean): Answer {
  const malformed = decision.status === 400;
  if (grpc)
    return grpcAnswer(
      malformed ? GRPC_INVALID_ARGUMENT : GRPC_PERMISSION_DENIED,
      `${malformed ? "bad request" : "permission denied"}: ${decision.reason}`,
    );
  const status = malformed ? 400 : 403;
  const body = denialBody(status, decision);
  return {
    headers: {
      ":status": String(status),
      "content-type": "application/json",
      "content-length": String(Buffer.byteLength(body)),
    },
    body,
    status,
  };
}

export function unavailableAnswer(reason: string, grpc: boolean): Answer {
  if (grpc) return grpcAnswer(GRPC_UNAVAILABLE, `upstream unavailable: ${reason}`);
  const body = denialBody(502, { policy: null, reason: `upstream: ${reason}` });
  return {
    headers: {
      ":status": "502",
      "content-type": "application/json",
      "content-length": String(Buffer.byteLength(body)),
    },
    body,
    status: 502,
  };
}
