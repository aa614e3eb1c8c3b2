import type { FlowRecord } from "../../core/flow.ts";
import { parseSpiffeId } from "../../core/identity.ts";
import type { Peer } from "../../core/identity.ts";
import type { Labels } from "../../core/labels.ts";
import { compilePolicySet, evaluate } from "../../core/policy/index.ts";
import type { AuthzRequest, CompiledPolicySet, PolicyDocument } from "../../core/policy/index.ts";
import { labelsKey } from "./labels.ts";

/**
 * "What would happen": replays observed flows through core/policy's evaluation, in enforce mode,
 * against the policies in force with a proposed file applied (documents replace those of the same
 * name, others are added; or the proposal alone with `replace`), and lists the flows whose verdict
 * would differ from what enforce mode gave when they were observed (a would-deny counts as deny).
 */

export interface SimulateOptions {
  readonly current: readonly PolicyDocument[];
  readonly proposed: readonly PolicyDocument[];
  /** Judge the proposal alone instead of merged into the current policies. */
  readonly replace?: boolean;
}

export interface Outcome {
  readonly verdict: "allow" | "deny";
  readonly policy: string | null;
  readonly reason: string;
}

/** Flows with the same request and the same change, folded into one line. */
export interface VerdictChange {
  readonly direction: FlowRecord["direction"];
  readonly source: FlowRecord["source"];
  readonly destination: FlowRecord["destination"];
  readonly port: number;
  readonly method?: string;
  readonly path?: string;
  readonly before: Outcome;
  readonly after: Outcome;
  readonly count: number;
  readonly lastSeen: number;
  readonly flowIds: readonly string[];
}

export interface SimulationResult {
  readonly evaluated: number;
  readonly unchanged: number;
  readonly nowDenied: number;
  readonly nowAllowed: number;
  readonly changes: readonly VerdictChange[];
}

/** Merges a proposal into the current set: same-named documents are replaced, new ones added. */
export function applyProposal(
  current: readonly PolicyDocument[],
  proposed: readonly PolicyDocument[],
): PolicyDocument[] {
  const names = new Set(proposed.map((d) => d.metadata.name));
  return [...current.filter((d) => !names.has(d.metadata.name)), ...proposed];
}

export function simulate(records: readonly FlowRecord[], opts: SimulateOptions): SimulationResult {
  const set = compilePolicySet(opts.replace ? opts.proposed : applyProposal(opts.current, opts.proposed));
  const intern = new Map<string, Labels>();
  const changes = new Map<string, VerdictChange & { flowIds: string[] }>();
  let nowDenied = 0;
  let nowAllowed = 0;
  for (const r of records) {
    const before: Outcome = {
      verdict: r.verdict === "deny" || r.wouldDeny ? "deny" : "allow",
      policy: r.policy,
      reason: r.reason,
    };
    const after = decideInEnforce(set, r, intern);
    if (after.verdict === before.verdict) continue;
    if (after.verdict === "deny") nowDenied++;
    else nowAllowed++;
    const key = JSON.stringify([
      r.direction,
      r.source.spiffeId ?? r.source.address,
      r.destination.spiffeId ?? r.destination.address,
      r.port,
      r.http?.method,
      r.http?.path,
      before.verdict,
      after.policy,
    ]);
    const seen = changes.get(key);
    if (seen) {
      changes.set(key, {
        ...seen,
        count: seen.count + 1,
        lastSeen: Math.max(seen.lastSeen, r.time),
        flowIds: seen.flowIds.length < 5 ? [...seen.flowIds, r.id] : seen.flowIds,
      });
      continue;
    }
    changes.set(key, {
      direction: r.direction,
      source: r.source,
      destination: r.destination,
      port: r.port,
      ...(r.http ? { method: r.http.method, path: r.http.path } : {}),
      before,
      after,
      count: 1,
      lastSeen: r.time,
      flowIds: [r.id],
    });
  }
  return {
    evaluated: records.length,
    unchanged: records.length - nowDenied - nowAllowed,
    nowDenied,
    nowAllowed,
    changes: [...changes.values()].sort((a, b) => b.lastSeen - a.lastSeen),
  };
}

/** Evaluates one observed flow as its enforcement point would, in enforce mode. */
export function decideInEnforce(
  set: CompiledPolicySet,
  r: FlowRecord,
  intern = new Map<string, Labels>(),
): Outcome {
  const d = evaluate(set, requestFromFlow(r, intern));
  return { verdict: d.verdict, policy: d.policy, reason: d.reason };
}

export function requestFromFlow(r: FlowRecord, intern = new Map<string, Labels>()): AuthzRequest {
  const local = r.direction === "ingress" ? r.destination : r.source;
  const remote = r.direction === "ingress" ? r.source : r.destination;
  return {
    direction: r.direction,
    local: { labels: interned(local.labels, intern) },
    peer: peerOf(remote, intern),
    port: r.port,
    ...(r.http ? { http: { method: r.http.method, path: r.http.path, headers: {} } } : {}),
    mode: "enforce",
  };
}

function peerOf(end: FlowRecord["source"], intern: Map<string, Labels>): Peer {
  const parsed = end.spiffeId ? parseSpiffeId(end.spiffeId) : null;
  if (end.spiffeId && parsed) {
    return {
      kind: "workload",
      identity: {
        spiffeId: end.spiffeId,
        trustDomain: parsed.trustDomain,
        labels: interned(end.labels, intern),
        serial: "",
        notAfter: new Date(8.64e15),
      },
      ...(end.address ? { address: end.address } : {}),
    };
  }
  return { kind: "external", address: end.address ?? "" };
}

// evaluate() caches per labels object; records parsed from disk each carry their own copy.
function interned(labels: Labels, intern: Map<string, Labels>): Labels {
  const key = labelsKey(labels);
  const existing = intern.get(key);
  if (existing) return existing;
  intern.set(key, labels);
  return labels;
}
