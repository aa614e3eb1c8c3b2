import type { Registry } from "prom-client";
import type { Peer, WorkloadIdentity } from "../../core/identity.ts";
import { workloadOf } from "../../core/identity.ts";
import { BucketCounts, LabelSetTable, exposeCounter, exposeHistogram } from "./label-sets.ts";

/**
 * The mesh's request and connection metrics in Istio's standard shape (`istio_requests_total` and
 * its siblings, under `sigil_` names, duration in seconds), with Istio's label names: a dashboard
 * built for those reads these by renaming the metric. Labels Sigil adds: `policy` (the policy that
 * decided, `none` for a default or a refusal before policy) and `verdict` (allow, deny, would_deny
 * in observe mode). See README.md for the mapping and the cardinality bound.
 */

/** Labels whose values are unbounded (workloads, principals, apps, policies): folded on overflow. */
const HIGH_CARDINALITY = [
  "source_workload",
  "source_workload_namespace",
  "source_principal",
  "source_app",
  "destination_workload",
  "destination_workload_namespace",
  "destination_principal",
  "destination_app",
  "policy",
];

/** Seconds, from half a millisecond to a minute. */
export const DURATION_BUCKETS = [
  0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60,
];
/** Bytes, by decades from 1 B to 100 MB (Istio's byte buckets). */
const SIZE_BUCKETS = [1, 10, 100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000, 100_000_000];

export const DEFAULT_MAX_LABEL_SETS = 1000;

export type MeshProtocol = "http" | "grpc" | "tcp";
export type Verdict = "allow" | "deny" | "would_deny";

/** One decided request or connection, as the metrics see it. */
export interface MeshObservation {
  readonly direction: "ingress" | "egress";
  readonly self: WorkloadIdentity;
  readonly peer: Peer;
  readonly encrypted: boolean;
  readonly protocol: MeshProtocol;
  readonly verdict: Verdict;
  readonly policy: string | null;
}

/** What a request's metrics record beyond its observation. */
export interface RequestFigures {
  readonly status: number;
  /** gRPC only: the status the stream ended with (trailers, or headers of a trailers-only answer). */
  readonly grpcStatus?: number;
  readonly seconds: number;
  readonly requestBytes: number;
  readonly responseBytes: number;
}

interface RequestValues {
  requests: number;
  readonly duration: BucketCounts;
  readonly requestBytes: BucketCounts;
  readonly responseBytes: BucketCounts;
}

interface TcpValues {
  opened: number;
  closed: number;
  sent: number;
  received: number;
}

interface End {
  readonly workload: string;
  readonly namespace: string;
  readonly principal: string;
  readonly app: string;
}

const UNKNOWN: End = { workload: "unknown", namespace: "unknown", principal: "unknown", app: "unknown" };

/** An identity's labels, worked out once per identity object (each rotation brings a new one). */
const ends = new WeakMap<WorkloadIdentity, End>();

function endOf(identity: WorkloadIdentity): End {
  let end = ends.get(identity);
  if (end === undefined) {
    const w = workloadOf(identity.spiffeId);
    end = {
      workload: w.name,
      namespace: w.namespace,
      principal: identity.spiffeId,
      app: identity.labels.app ?? "unknown",
    };
    ends.set(identity, end);
  }
  return end;
}

function peerEnd(peer: Peer): End {
  return peer.kind === "workload" ? endOf(peer.identity) : UNKNOWN;
}

/** HTTP status as a number that is its label: three digits, anything else (no response) 0. */
function statusCode(status: number): number {
  return Number.isInteger(status) && status >= 100 && status <= 599 ? status : 0;
}

/** gRPC status 0..16, or -1 for a request that is not gRPC or carried none (an empty label). */
function grpcCode(status: number | undefined): number {
  return status !== undefined && Number.isInteger(status) && status >= 0 && status <= 16 ? status : -1;
}

const PROTOCOL_CODES: Readonly<Record<MeshProtocol, number>> = { http: 0, grpc: 1, tcp: 2 };
const VERDICT_CODES: Readonly<Record<Verdict, number>> = { allow: 0, deny: 1, would_deny: 2 };

/**
 * The labels of a request that vary between two identities' requests, but its policy, as one
 * number: remembering a series by it allocates nothing per request.
 */
function variableLabelsCode(o: MeshObservation, r: RequestFigures): number {
  let code = o.direction === "ingress" ? 1 : 0;
  code = code * 2 + (o.encrypted ? 1 : 0);
  code = code * 3 + PROTOCOL_CODES[o.protocol];
  code = code * 3 + VERDICT_CODES[o.verdict];
  code = code * 600 + statusCode(r.status);
  return code * 18 + grpcCode(r.grpcStatus) + 1;
}

function common(o: MeshObservation): Record<string, string> {
  const self = endOf(o.self);
  const other = peerEnd(o.peer);
  const [source, destination] = o.direction === "ingress" ? [other, self] : [self, other];
  return {
    reporter: o.direction === "ingress" ? "destination" : "source",
    source_workload: source.workload,
    source_workload_namespace: source.namespace,
    source_principal: source.principal,
    source_app: source.app,
    destination_workload: destination.workload,
    destination_workload_namespace: destination.namespace,
    destination_principal: destination.principal,
    destination_app: destination.app,
    request_protocol: o.protocol,
    connection_security_policy: o.encrypted ? "mutual_tls" : "none",
    policy: o.policy ?? "none",
    verdict: o.verdict,
  };
}

/** Label sets remembered per pair of identities (statuses, verdicts, policies); beyond, built each time. */
const MAX_REMEMBERED_PER_PAIR = 256;

/** One pair of identities' remembered series: by policy, then by the other varying labels' code. */
interface PairSeries {
  remembered: number;
  readonly byPolicy: Map<string, Map<number, RequestValues>>;
}

export class MeshMetrics {
  private readonly requests: LabelSetTable<RequestValues>;
  /** Own identity → peer identity (or UNKNOWN for a peer outside the mesh) → the other labels → series. */
  private readonly requestSeries = new WeakMap<WorkloadIdentity, WeakMap<object, PairSeries>>();
  private readonly tcp: LabelSetTable<TcpValues>;

  constructor(registry: Registry, maxLabelSets: number = DEFAULT_MAX_LABEL_SETS) {
    this.requests = new LabelSetTable(maxLabelSets, HIGH_CARDINALITY, () => ({
      requests: 0,
      duration: new BucketCounts(DURATION_BUCKETS),
      requestBytes: new BucketCounts(SIZE_BUCKETS),
      responseBytes: new BucketCounts(SIZE_BUCKETS),
    }));
    this.tcp = new LabelSetTable(maxLabelSets, HIGH_CARDINALITY, () => ({
      opened: 0,
      closed: 0,
      sent: 0,
      received: 0,
    }));
    const r = this.requests;
    exposeCounter(registry, "sigil_requests_total", "Requests decided (HTTP, gRPC)", r, (v) => v.requests);
    exposeHistogram(
      registry,
      "sigil_request_duration_seconds",
      "Time from a request's start to the end of its response",
      DURATION_BUCKETS,
      r,
      (v) => v.duration,
    );
    exposeHistogram(
      registry,
      "sigil_request_bytes",
      "Request body sizes",
      SIZE_BUCKETS,
      r,
      (v) => v.requestBytes,
    );
    exposeHistogram(
      registry,
      "sigil_response_bytes",
      "Response body sizes",
      SIZE_BUCKETS,
      r,
      (v) => v.responseBytes,
    );
    const t = this.tcp;
    exposeCounter(
      registry,
      "sigil_tcp_connections_opened_total",
      "TCP connections decided",
      t,
      (v) => v.opened,
    );
    exposeCounter(
      registry,
      "sigil_tcp_connections_closed_total",
      "TCP connections ended",
      t,
      (v) => v.closed,
    );
    exposeCounter(
      registry,
      "sigil_tcp_sent_bytes_total",
      "Bytes sent to the downstream client on TCP connections",
      t,
      (v) => v.sent,
    );
    exposeCounter(
      registry,
      "sigil_tcp_received_bytes_total",
      "Bytes received from the downstream client on TCP connections",
      t,
      (v) => v.received,
    );
  }

  /** How many label sets the two tables hold (own and overflow series). */
  get labelSets(): { requests: number; tcp: number } {
    return { requests: this.requests.size, tcp: this.tcp.size };
  }

  request(o: MeshObservation, r: RequestFigures): void {
    const v = this.requestValues(o, r);
    v.requests++;
    v.duration.observe(r.seconds);
    v.requestBytes.observe(r.requestBytes);
    v.responseBytes.observe(r.responseBytes);
  }

  /**
   * The series of a request's label set, remembered per pair of identities: between two sidecars
   * a request has the same labels as the previous one almost always, and building and joining its
   * sixteen labels every time cost about a tenth of a sidecar's busy time on the HTTP/1.1 path.
   */
  private requestValues(o: MeshObservation, r: RequestFigures): RequestValues {
    let byPeer = this.requestSeries.get(o.self);
    if (byPeer === undefined) {
      byPeer = new WeakMap();
      this.requestSeries.set(o.self, byPeer);
    }
    const peerKey: object = o.peer.kind === "workload" ? o.peer.identity : UNKNOWN;
    let pair = byPeer.get(peerKey);
    if (pair === undefined) {
      pair = { remembered: 0, byPolicy: new Map() };
      byPeer.set(peerKey, pair);
    }
    const policy = o.policy ?? "";
    const code = variableLabelsCode(o, r);
    const remembered = pair.byPolicy.get(policy)?.get(code);
    if (remembered !== undefined) return remembered;
    const grpc = grpcCode(r.grpcStatus);
    const v = this.requests.values({
      ...common(o),
      response_code: String(statusCode(r.status)),
      grpc_response_status: grpc < 0 ? "" : String(grpc),
    });
    if (pair.remembered < MAX_REMEMBERED_PER_PAIR) {
      let byCode = pair.byPolicy.get(policy);
      if (byCode === undefined) {
        byCode = new Map();
        pair.byPolicy.set(policy, byCode);
      }
      byCode.set(code, v);
      pair.remembered++;
    }
    return v;
  }

  tcpOpened(o: MeshObservation): void {
    this.tcp.values(common(o)).opened++;
  }

  tcpClosed(o: MeshObservation, sent: number, received: number): void {
    const v = this.tcp.values(common(o));
    v.closed++;
    v.sent += sent;
    v.received += received;
  }
}
