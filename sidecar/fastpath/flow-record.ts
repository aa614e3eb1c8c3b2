/** The flow record of one fast-path decision, built after its verdict is out. */
import { randomUUID } from "node:crypto";
import type { FlowEndpoint, FlowRecord } from "../../core/flow.ts";
import type { WorkloadIdentity } from "../../core/identity.ts";
import type { Decision } from "../../core/policy/index.ts";
import type { FourTuple } from "./token.ts";

/** A decision waiting for its flow record (the identity is the one that decided, even if rotated since). */
export interface UnreportedFlow {
  readonly direction: "ingress" | "egress";
  readonly tuple: FourTuple;
  readonly peer: WorkloadIdentity | null;
  readonly decision: Decision;
  readonly time: number;
  readonly local: WorkloadIdentity;
}

export function flowRecord(f: UnreportedFlow): FlowRecord {
  const localEnd = (address: string): FlowEndpoint => ({
    spiffeId: f.local.spiffeId,
    labels: f.local.labels,
    address,
  });
  const peerEnd = (address: string): FlowEndpoint =>
    f.peer ? { spiffeId: f.peer.spiffeId, labels: f.peer.labels, address } : { labels: {}, address };
  const ingress = f.direction === "ingress";
  return {
    id: randomUUID(),
    time: f.time,
    reporter: { spiffeId: f.local.spiffeId, kind: "fastpath" },
    direction: f.direction,
    source: ingress ? peerEnd(f.tuple.clientAddress) : localEnd(f.tuple.clientAddress),
    destination: ingress ? localEnd(f.tuple.serverAddress) : peerEnd(f.tuple.serverAddress),
    port: f.tuple.serverPort,
    protocol: "tcp",
    verdict: f.decision.verdict,
    wouldDeny: f.decision.wouldDeny,
    policy: f.decision.policy,
    reason: f.decision.reason,
    encrypted: false,
    bytesSent: 0,
    bytesReceived: 0,
    durationMs: 0,
  };
}
