import type { FlowRecord, FlowUser } from "../../core/flow.ts";
import type { Labels } from "../../core/labels.ts";
import { sumTallies, Tally } from "./edge-tally.ts";
import type { TallyView } from "./edge-tally.ts";

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
 * Aggregated requests between two identities on one destination port, each request counted once
 * although both sidecars may report it (see `countRequests`).
 */
export interface Edge extends TallyView {
  readonly id: string;
  readonly source: EdgeEnd;
  readonly destination: EdgeEnd;
  readonly port: number;
  /** Records behind the counts: the caller's (egress) and the callee's (ingress) reports. */
  readonly reports: { readonly caller: number; readonly callee: number };
  /** Whose reports the counts follow: the callee's whenever it reported on this edge. */
  readonly countedFrom: "callee" | "caller";
  readonly lastSeen: number;
  readonly lastVerdict: "allow" | "deny";
  readonly lastWouldDeny: boolean;
  /** The rule that decided the latest request (the callee's, or the caller's when it refused). */
  readonly lastPolicy: string | null;
  readonly lastReason: string;
}

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

/**
 * What a record says about a request, for counting it once:
 * - `callee`: the callee's ingress decision, made on every request that reached it;
 * - `callerStopped`: the caller's proxy refused it on the way out, so the callee never saw it;
 * - `callerAfterCallee`: the caller's fast path refused the SYN-ACK of a connection the callee had
 *   already allowed (the fast path decides egress on the callee's answer);
 * - `callerWouldDeny`: the caller's observe mode let through what its egress policy would refuse;
 * - `callerPassed`: the caller's egress let it go, and the callee decides it (if it reports).
 */
export type ReportRole =
  "callee" | "callerStopped" | "callerAfterCallee" | "callerWouldDeny" | "callerPassed";

export function reportRole(r: FlowRecord): ReportRole {
  if (r.direction === "ingress") return "callee";
  if (r.verdict === "deny") return r.reporter.kind === "fastpath" ? "callerAfterCallee" : "callerStopped";
  return r.wouldDeny ? "callerWouldDeny" : "callerPassed";
}

export const ROLES: readonly ReportRole[] = [
  "callee",
  "callerStopped",
  "callerAfterCallee",
  "callerWouldDeny",
  "callerPassed",
];

type Tallies = Record<ReportRole, Tally>;

/**
 * Each request once. Without a report from the callee (it has no sidecar, or is outside the mesh),
 * the caller's reports are the requests. When the callee reported, its reports are the requests,
 * plus what the caller stopped before they left; a fast-path refusal by the caller turns one of the
 * callee's allows into a denial, and a would-deny of the caller's observe mode one of them into a
 * would-deny (the records carry no shared request key, so these two are matched by count, allows
 * first). The caller's plain egress allow is never a request of its own: the callee decides it.
 */
export function countRequests(t: Tallies): TallyView & { countedFrom: "callee" | "caller" } {
  if (t.callee.total === 0) {
    return {
      ...sumTallies([t.callerStopped, t.callerAfterCallee, t.callerWouldDeny, t.callerPassed]),
      countedFrom: "caller",
    };
  }
  const view = sumTallies([t.callee, t.callerStopped]);
  const refused = Math.min(view.allowed, t.callerAfterCallee.denied);
  view.allowed -= refused;
  view.denied += refused;
  const wouldDeny = Math.min(view.allowed, t.callerWouldDeny.wouldDeny);
  view.allowed -= wouldDeny;
  view.wouldDeny += wouldDeny;
  return { ...view, countedFrom: "callee" };
}

export interface Last {
  readonly time: number;
  readonly verdict: "allow" | "deny";
  readonly wouldDeny: boolean;
  readonly policy: string | null;
  readonly reason: string;
}

const rank = (l: Last) => (l.verdict === "deny" ? 2 : l.wouldDeny ? 1 : 0);

/** The later of two decisions; at the same millisecond the stricter one. */
function later(a: Last | undefined, b: Last | undefined): Last | undefined {
  if (!a || !b) return a ?? b;
  if (a.time !== b.time) return a.time > b.time ? a : b;
  return rank(b) > rank(a) ? b : a;
}

/**
 * One replica's edge with each report role's counts kept apart: the caller's reports of a request
 * may sit on one replica and the callee's on another, so edges from several replicas are added
 * role by role and only then counted once (`EdgeAggregator.absorb`).
 */
export interface EdgeReport {
  readonly id: string;
  readonly source: EdgeEnd;
  readonly destination: EdgeEnd;
  readonly port: number;
  readonly lastSeen: number;
  readonly tallies: Readonly<Record<ReportRole, TallyView>>;
  readonly last: Readonly<Partial<Record<ReportRole, Last>>>;
}

interface EdgeState {
  readonly id: string;
  source: EdgeEnd;
  destination: EdgeEnd;
  readonly port: number;
  lastSeen: number;
  readonly tallies: Tallies;
  readonly last: Partial<Record<ReportRole, Last>>;
}

/**
 * Maintains edges from the records the store holds. Records are added as they arrive and removed
 * when retention drops them, so the edges always describe exactly the retained records and are
 * rebuilt from the store alone after a restart.
 */
export class EdgeAggregator {
  private readonly edges = new Map<string, EdgeState>();

  add(r: FlowRecord): void {
    const edge = this.edgeFor(edgeKey(r), toEnd(r.source), toEnd(r.destination), r.port, r.time);
    const role = reportRole(r);
    edge.tallies[role].count(r, 1);
    const decision: Last = {
      time: r.time,
      verdict: r.verdict,
      wouldDeny: r.wouldDeny,
      policy: r.policy,
      reason: r.reason,
    };
    edge.last[role] = later(edge.last[role], decision);
    if (r.time >= edge.lastSeen) {
      edge.lastSeen = r.time;
      edge.source = toEnd(r.source);
      edge.destination = toEnd(r.destination);
    }
  }

  /** Adds another replica's report of an edge. */
  absorb(report: EdgeReport): void {
    const edge = this.edgeFor(report.id, report.source, report.destination, report.port, report.lastSeen);
    for (const role of ROLES) {
      edge.tallies[role].add(report.tallies[role]);
      edge.last[role] = later(edge.last[role], report.last[role]);
    }
    if (report.lastSeen >= edge.lastSeen) {
      edge.lastSeen = report.lastSeen;
      edge.source = report.source;
      edge.destination = report.destination;
    }
  }

  /** Every edge with its roles apart, for another replica to absorb. */
  reports(): EdgeReport[] {
    return [...this.edges.values()].map((e) => ({
      id: e.id,
      source: e.source,
      destination: e.destination,
      port: e.port,
      lastSeen: e.lastSeen,
      tallies: e.tallies,
      last: e.last,
    }));
  }

  private edgeFor(id: string, source: EdgeEnd, destination: EdgeEnd, port: number, time: number): EdgeState {
    let edge = this.edges.get(id);
    if (!edge) {
      edge = {
        id,
        source,
        destination,
        port,
        lastSeen: time,
        tallies: Object.fromEntries(ROLES.map((role) => [role, new Tally()])) as Tallies,
        last: {},
      };
      this.edges.set(id, edge);
    }
    return edge;
  }

  remove(r: FlowRecord): void {
    const key = edgeKey(r);
    const edge = this.edges.get(key);
    if (!edge) return;
    edge.tallies[reportRole(r)].count(r, -1);
    if (ROLES.every((role) => edge.tallies[role].total <= 0)) this.edges.delete(key);
  }

  list(): Edge[] {
    return [...this.edges.values()].sort((a, b) => a.id.localeCompare(b.id)).map(view);
  }

  get(id: string): Edge | undefined {
    const edge = this.edges.get(id);
    return edge && view(edge);
  }
}

function view(e: EdgeState): Edge {
  const counts = countRequests(e.tallies);
  const deciding: readonly ReportRole[] =
    counts.countedFrom === "callee"
      ? ["callee", "callerStopped", "callerAfterCallee", "callerWouldDeny"]
      : ["callerStopped", "callerAfterCallee", "callerWouldDeny", "callerPassed"];
  const last = deciding.reduce<Last | undefined>((acc, role) => later(acc, e.last[role]), undefined);
  const callee = e.tallies.callee.total;
  const all = ROLES.reduce((n, role) => n + e.tallies[role].total, 0);
  return {
    id: e.id,
    source: e.source,
    destination: e.destination,
    port: e.port,
    ...counts,
    reports: { caller: all - callee, callee },
    lastSeen: e.lastSeen,
    lastVerdict: last?.verdict ?? "allow",
    lastWouldDeny: last?.wouldDeny ?? false,
    lastPolicy: last?.policy ?? null,
    lastReason: last?.reason ?? "",
  };
}
