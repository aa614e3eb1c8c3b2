import type { z } from "zod";
import type { FlowRecord } from "../../core/flow.ts";
import { EdgeAggregator, type Edge, type EdgeReport } from "../flows/edges.ts";
import type { FlowFilter, FlowStore } from "../flows/store.ts";
import { edgesAnswer, flowsAnswer } from "./peer-answers.ts";
import { ReplicaFollow, type ReplicaPeer, type Unanswered } from "./replica-follow.ts";

export type { ReplicaPeer, Unanswered };

/** An answer over every live replica; `unanswered` names the ones it lacks (then it is partial). */
export interface Merged<T> {
  readonly value: T;
  readonly unanswered: readonly Unanswered[];
}

export interface ReplicaFlowsOptions {
  readonly store: FlowStore;
  /** The other live replicas; none for a single control plane. */
  readonly peers: () => readonly ReplicaPeer[];
  /** The bearer token presented to them: replicas share one admin token. */
  readonly token: string;
  /** How peers are reached (one that trusts their serving certificates over TLS). */
  readonly fetch?: typeof fetch;
  /** How long one peer may take to answer in full before the answer goes on without it (default 3 s). */
  readonly peerTimeoutMs?: number;
}

/** The query parameter a replica sets when it asks another, so that one answers from its own store only. */
export const LOCAL_PARAM = "local";

/**
 * Each replica keeps the flows its own sidecars report. A question about flows asked of any
 * replica is put to every other live one too (with `local=1`, so they do not ask further), each
 * bounded by a timeout, and the answers are merged: records de-duplicated by reporter and id (a
 * batch re-sent to another replica after a failover is stored twice), edges added role by role so
 * the caller's reports on one replica and the callee's on another still count each request once.
 * A replica that does not answer in time is named in the result, never waited on longer.
 */
export class ReplicaFlows {
  private readonly fetch: typeof fetch;
  private readonly timeoutMs: number;

  constructor(private readonly options: ReplicaFlowsOptions) {
    this.fetch = options.fetch ?? fetch;
    this.timeoutMs = options.peerTimeoutMs ?? 3000;
  }

  /** The newest `filter.limit` (default 100) matching records over every replica, oldest first. */
  async query(filter: FlowFilter, local: boolean): Promise<Merged<FlowRecord[]>> {
    const own = this.options.store.query(filter);
    if (local) return { value: own, unanswered: [] };
    const limit = filter.limit ?? 100;
    const asked = await this.ask(`/api/flows?${flowParams(filter, String(limit))}`, flowsAnswer);
    const merged = mergeRecords([own, ...asked.value.map((a) => a.flows)]);
    return { value: merged.slice(Math.max(0, merged.length - limit)), unanswered: asked.unanswered };
  }

  /** Every retained matching record over every replica, oldest first (suggest, simulate, diff). */
  async all(filter: Omit<FlowFilter, "limit">, local: boolean): Promise<Merged<FlowRecord[]>> {
    const own = this.options.store.all(filter);
    if (local) return { value: own, unanswered: [] };
    const asked = await this.ask(`/api/flows?${flowParams(filter, "all")}`, flowsAnswer);
    return { value: mergeRecords([own, ...asked.value.map((a) => a.flows)]), unanswered: asked.unanswered };
  }

  /** The edges over every replica, each request counted once. */
  async edges(local: boolean): Promise<Merged<Edge[]>> {
    if (local) return { value: this.options.store.edges(), unanswered: [] };
    const asked = await this.ask(`/api/graph?reports=1`, edgesAnswer);
    if (asked.value.length === 0) return { value: this.options.store.edges(), unanswered: asked.unanswered };
    const merged = new EdgeAggregator();
    for (const reports of [this.options.store.edgeReports(), ...asked.value.map((a) => a.reports)])
      for (const report of reports) merged.absorb(report);
    return { value: merged.list(), unanswered: asked.unanswered };
  }

  /** Every other live replica's new matching records as they arrive (`follow=1`). */
  follow(
    filter: Omit<FlowFilter, "limit">,
    onRecord: (r: FlowRecord) => void,
    onUnanswered: (u: Unanswered) => void,
  ): ReplicaFollow {
    return new ReplicaFollow({
      peers: this.options.peers,
      token: this.options.token,
      fetch: this.fetch,
      query: flowParams(filter, "100"),
      connectTimeoutMs: this.timeoutMs,
      onRecord,
      onUnanswered,
    });
  }

  /** This replica's edges with their roles apart, as another replica asks for them. */
  reports(): EdgeReport[] {
    return this.options.store.edgeReports();
  }

  private async ask<T>(
    path: string,
    schema: z.ZodType<T>,
  ): Promise<{ value: T[]; unanswered: Unanswered[] }> {
    const peers = this.options.peers();
    const separator = path.includes("?") ? "&" : "?";
    const answers = await Promise.all(
      peers.map((peer) => this.askOne(peer, `${path}${separator}${LOCAL_PARAM}=1`, schema)),
    );
    const value: T[] = [];
    const unanswered: Unanswered[] = [];
    answers.forEach((a, i) => {
      if (a.ok) value.push(a.value);
      else unanswered.push({ ...(peers[i] as ReplicaPeer), reason: a.reason });
    });
    return { value, unanswered };
  }

  private async askOne<T>(
    peer: ReplicaPeer,
    path: string,
    schema: z.ZodType<T>,
  ): Promise<{ ok: true; value: T } | { ok: false; reason: string }> {
    try {
      const res = await this.fetch(`${peer.api}${path}`, {
        headers: { authorization: `Bearer ${this.options.token}` },
        signal: AbortSignal.timeout(this.timeoutMs),
      });
      const body: unknown = await res.json().catch(() => undefined);
      if (!res.ok) {
        const error = (body as { error?: unknown } | undefined)?.error;
        return { ok: false, reason: `HTTP ${res.status}${typeof error === "string" ? `: ${error}` : ""}` };
      }
      const parsed = schema.safeParse(body);
      if (!parsed.success) {
        const issue = parsed.error.issues[0];
        return {
          ok: false,
          reason: `unexpected answer at ${issue?.path.join(".") || "body"}: ${issue?.message}`,
        };
      }
      return { ok: true, value: parsed.data };
    } catch (err) {
      const e = err as Error & { cause?: { message?: string } };
      if (e.name === "TimeoutError") return { ok: false, reason: `no answer within ${this.timeoutMs} ms` };
      return { ok: false, reason: e.cause?.message ?? e.message };
    }
  }
}

/** What makes a record one: its reporter and the id that reporter gave it. */
export function recordKey(r: FlowRecord): string {
  return `${r.reporter.spiffeId} ${r.id}`;
}

/** Records from several replicas as one list, oldest first, each reporter's record once. */
function mergeRecords(lists: readonly (readonly FlowRecord[])[]): FlowRecord[] {
  const seen = new Map<string, FlowRecord>();
  for (const list of lists) for (const r of list) seen.set(recordKey(r), r);
  return [...seen.values()].sort((a, b) => a.time - b.time);
}

function flowParams(filter: Omit<FlowFilter, "limit">, limit: string): URLSearchParams {
  const p = new URLSearchParams();
  if (filter.since !== undefined) p.set("since", String(filter.since));
  if (filter.denied !== undefined) p.set("denied", String(filter.denied));
  if (filter.selector)
    p.set(
      "selector",
      Object.entries(filter.selector)
        .map(([k, v]) => `${k}=${v}`)
        .join(","),
    );
  if (filter.workload) p.set("workload", filter.workload);
  if (filter.edge) p.set("edge", filter.edge);
  p.set("limit", limit);
  return p;
}

/** An API answer built from merged flows: flagged partial, naming the replicas it lacks, when some did not answer. */
export function mergedBody<T extends object>(
  body: T,
  unanswered: readonly Unanswered[],
): T | (T & { partial: true; unanswered: readonly Unanswered[] }) {
  return unanswered.length === 0 ? body : { ...body, partial: true, unanswered };
}
