import type { Decision } from "../../core/policy/index.ts";
import { refusalDecision } from "../../core/policy/index.ts";

/**
 * Why the sidecar refused on its own, before or beside policy, as a value carrying the reason's
 * data. Metrics and logs read its `kind`; the text a flow record and a denial body show is rendered
 * from it once, never parsed back.
 */
export type Refusal =
  /** The peer's SPIFFE ID, or its certificate's serial (`serial` set), is in the current revocation list. */
  | {
      readonly kind: "revoked";
      readonly spiffeId: string;
      readonly serial: string | null;
      readonly reason: string;
    }
  /** Plaintext where the port's peer authentication is STRICT; no port: none takes plaintext here. */
  | { readonly kind: "mtls-required"; readonly port: number | null }
  /** A mesh mTLS hop to a port whose peer authentication is DISABLE. */
  | { readonly kind: "mtls-disabled"; readonly port: number }
  /** The caller named one of the sidecar's own listener or admin ports. */
  | { readonly kind: "reserved-port"; readonly port: number }
  /** An HTTP-only port asked for as an opaque tunnel, or whose client did not speak HTTP in time. */
  | {
      readonly kind: "http-only";
      readonly port: number;
      readonly offered: "tunnel" | "not-http";
      readonly detectTimeoutMs?: number;
    }
  /** The mesh handshake failed: the peer's certificate was refused, or TLS itself failed. */
  | { readonly kind: "peer-rejected"; readonly reason: string; readonly message: string }
  | { readonly kind: "tls-error"; readonly message: string }
  /** A name an allow depends on does not bind to the destination address (`egress/dns.ts`). */
  | { readonly kind: "dns-binding"; readonly problem: string }
  /** The policy engine threw: a denial, never a crash. */
  | { readonly kind: "internal-error"; readonly message: string }
  /** A request that two parsers could read differently, or that is not HTTP at all. */
  | { readonly kind: "malformed-request"; readonly problem: string }
  /** A user-access port's sign-in, session or bearer token did not admit the request (`user-access/`). */
  | { readonly kind: "user-access"; readonly problem: string };

export type RefusalKind = Refusal["kind"];

/** A denial the sidecar made itself: a policy decision with the refusal it stands for. */
export interface RefusedDecision extends Decision {
  readonly refusal: Refusal;
}

/** The text a flow record, a log line and a denial body show for a refusal. */
export function refusalText(r: Refusal): string {
  switch (r.kind) {
    case "revoked":
      return r.serial === null
        ? `revoked: ${r.spiffeId}: ${r.reason}`
        : `revoked: ${r.spiffeId}: certificate ${r.serial}: ${r.reason}`;
    case "mtls-required":
      return r.port === null
        ? "mtls-required: no application port takes plaintext here"
        : `mtls-required: peer authentication is STRICT on port ${r.port}`;
    case "mtls-disabled":
      return `mtls-disabled: peer authentication is DISABLE on port ${r.port}`;
    case "reserved-port":
      return `reserved-port: port ${r.port} belongs to the sidecar`;
    case "http-only":
      return r.offered === "tunnel"
        ? `http-only: port ${r.port} is served as HTTP only; the caller asked for an opaque TCP tunnel`
        : `http-only: port ${r.port} is served as HTTP only; the client's first bytes were not HTTP` +
            ` (or none came within ${r.detectTimeoutMs} ms)`;
    case "peer-rejected":
      return `peer-rejected: ${r.reason}: ${r.message}`;
    case "tls-error":
      return `tls-error: ${r.message}`;
    case "dns-binding":
      return r.problem;
    case "internal-error":
      return `internal-error: policy evaluation failed: ${r.message}`;
    case "malformed-request":
      return `malformed-request: ${r.problem}`;
    case "user-access":
      return `user-access: ${r.problem}`;
  }
}

/** The denial for a refusal; a malformed request is answered 400, every other refusal 403. */
export function refused(r: Refusal): RefusedDecision {
  const decision = { ...refusalDecision(refusalText(r)), refusal: r };
  return r.kind === "malformed-request" ? { ...decision, status: 400 } : decision;
}

/** The `reason` label of the denials metric. */
export function denialCategory(decision: Decision): RefusalKind | "policy" | "default-deny" {
  if (decision.status === 400) return "malformed-request";
  if (decision.policy !== null) return "policy";
  const refusal = (decision as Partial<RefusedDecision>).refusal;
  return refusal === undefined ? "default-deny" : refusal.kind;
}
