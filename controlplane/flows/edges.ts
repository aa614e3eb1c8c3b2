import type { FlowRecord, FlowUser } from "../../core/flow.ts";
import type { Labels } from "../../core/labels.ts";

/**
 * One end of an edge: a mesh workload (by SPIFFE ID), a person signed in through user access (by
 * issuer and subject, whatever address they came from), or another non-mesh peer (by address).
 */
export interface EdgeEnd {
  /** The SPIFFE ID, `user:<issuer>#<sub>` for a person, or `external:<address>` outside the mesh. */
  readonly id: string;
  readonly spiffeId?: string;
  readonly address?: string;
  readonly user?: FlowUser;
  /** Labels of the most recent record that named this end. */
  readonly labels: Labels;
}

/**
 * Aggregated decisions between two identities on one destination port. Counts are of enforcement
 * decisions: a request allowed by the caller's sidecar (egress) and then by the callee's (ingress)
 * counts twice, a request refused at egress once.
 */
export interface Edge {
  readonly id: string;
  readonly source: EdgeEnd;
  readonly destination: EdgeEnd;
  readonly port: number;
  readonly allowed: number;
  readonly denied: number;
  /** Let through in observe mode, but enforce mode would have denied it. */
  readonly wouldDeny: number;
  readonly encrypted: number;
  readonly plaintext: number;
  readonly lastSeen: number;
  readonly lastVerdict: "allow" | "deny";
  readonly lastWouldDeny: boolean;
  readonly lastPolicy: string | null;
  readonly lastReason: string;
  readonly protocols: Readonly<Record<string, number>>;
  readonly methods: Readonly<Record<string, number>>;
  /** Distinct request paths seen, at most MAX_PATHS_PER_EDGE; the rest are counted in otherPaths. */
  readonly paths: Readonly<Record<string, number>>;
  readonly otherPaths: number;
}

export const MAX_PATHS_PER_EDGE = 256;

type Mutable<T> = {
  -readonly [K in keyof T]: T[K] extends Readonly<Record<string, number>> ? Record<string, number> : T[K];
};

export function endpointId(e: FlowRecord["source"]): string {
  if (e.spiffeId !== undefined) return e.spiffeId;
  if (e.user !== undefined) return `user:${e.user.issuer}#${e.user.sub}`;
  return `external:${e.address ?? "unknown"}`;
}

export function edgeKey(r: FlowRecord): string {
  return `${endpointId(r.source)} -> ${endpointId(r.destination)}:${r.port}`;
}

function toEnd(e: FlowRecord["source"]): EdgeEnd {
  return {
    id: endpointId(e),
    labels: e.labels,
    ...(e.spiffeId ? { spiffeId: e.spiffeId } : {}),
    ...(e.address ? { address: e.address } : {}),
    ...(e.spiffeId === undefined && e.user ? { user: e.user } : {}),
  };
}

function bump(map: Record<string, number>, key: string, by: number): void {
  const next = (map[key] ?? 0) + by;
  if (next <= 0) delete map[key];
  else map[key] = next;
}

/**
 * Maintains edges from the records the store holds. Records are added as they arrive and removed
 * when retention drops them, so the edges always describe exactly the retained records and are
 * rebuilt from the store alone after a restart.
 */
export class EdgeAggregator {
  private readonly edges = new Map<string, Mutable<Edge>>();

  add(r: FlowRecord): void {
    const key = edgeKey(r);
    let edge = this.edges.get(key);
    if (!edge) {
      edge = {
        id: key,
        source: toEnd(r.source),
        destination: toEnd(r.destination),
        port: r.port,
        allowed: 0,
        denied: 0,
        wouldDeny: 0,
        encrypted: 0,
        plaintext: 0,
        lastSeen: 0,
        lastVerdict: r.verdict,
        lastWouldDeny: r.wouldDeny,
        lastPolicy: r.policy,
        lastReason: r.reason,
        protocols: {},
        methods: {},
        paths: {},
        otherPaths: 0,
      };
      this.edges.set(key, edge);
    }
    this.count(edge, r, 1);
    if (r.time >= edge.lastSeen) {
      edge.lastSeen = r.time;
      edge.lastVerdict = r.verdict;
      edge.lastWouldDeny = r.wouldDeny;
      edge.lastPolicy = r.policy;
      edge.lastReason = r.reason;
      edge.source = toEnd(r.source);
      edge.destination = toEnd(r.destination);
    }
  }

  remove(r: FlowRecord): void {
    const key = edgeKey(r);
    const edge = this.edges.get(key);
    if (!edge) return;
    this.count(edge, r, -1);
    if (edge.allowed + edge.denied + edge.wouldDeny <= 0) this.edges.delete(key);
  }

  list(): Edge[] {
    return [...this.edges.values()].sort((a, b) => a.id.localeCompare(b.id));
  }

  get(id: string): Edge | undefined {
    return this.edges.get(id);
  }

  private count(edge: Mutable<Edge>, r: FlowRecord, by: 1 | -1): void {
    if (r.verdict === "deny") edge.denied += by;
    else if (r.wouldDeny) edge.wouldDeny += by;
    else edge.allowed += by;
    if (r.encrypted) edge.encrypted += by;
    else edge.plaintext += by;
    bump(edge.protocols, r.protocol, by);
    if (!r.http) return;
    bump(edge.methods, r.http.method, by);
    if (r.http.path in edge.paths || (by > 0 && Object.keys(edge.paths).length < MAX_PATHS_PER_EDGE)) {
      bump(edge.paths, r.http.path, by);
    } else {
      edge.otherPaths = Math.max(0, edge.otherPaths + by);
    }
  }
}
