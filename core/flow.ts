import type { Labels } from "./labels.ts";

export type Verdict = "allow" | "deny";

/** One enforcement decision, reported by every enforcement point (L7 proxy, L4 fast path). */
export interface FlowRecord {
  /** Unique per record (reporter-generated, used for de-duplication across reconnects). */
  readonly id: string;
  /** Milliseconds since the epoch when the decision was made. */
  readonly time: number;
  /** Which enforcement point reported it: "sidecar" or "fastpath", and whether it was the caller's
   * (egress) or callee's (ingress) side. */
  readonly reporter: { readonly spiffeId: string; readonly kind: "sidecar" | "fastpath" };
  readonly direction: "ingress" | "egress";
  readonly source: FlowEndpoint;
  readonly destination: FlowEndpoint;
  readonly port: number;
  readonly protocol: "tcp" | "http" | "grpc";
  readonly http?: { readonly method: string; readonly path: string; readonly status?: number };
  /** What happened to the traffic. */
  readonly verdict: Verdict;
  /** In observe mode the traffic is let through: true when enforce mode would have denied it. */
  readonly wouldDeny: boolean;
  /** Id of the deciding policy rule, or null for the default. */
  readonly policy: string | null;
  readonly reason: string;
  /** Whether the hop between the two workloads was mutually authenticated and encrypted. */
  readonly encrypted: boolean;
  readonly bytesSent: number;
  readonly bytesReceived: number;
  readonly durationMs: number;
}

export interface FlowEndpoint {
  /** SPIFFE ID of a mesh workload; absent for unauthenticated / non-mesh ends. */
  readonly spiffeId?: string;
  readonly labels: Labels;
  readonly address?: string;
  /** The person the request was made for, when the enforcement point verified one (user access). */
  readonly user?: FlowUser;
}

export interface FlowUser {
  readonly issuer: string;
  readonly sub: string;
}
