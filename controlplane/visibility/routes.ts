import type { IncomingMessage, ServerResponse } from "node:http";
import { z } from "zod";
import type { FlowRecord, FlowUser } from "../../core/flow.ts";
import { parseLabelList } from "../../core/labels.ts";
import type { Labels } from "../../core/labels.ts";
import { formatPolicyError, parsePolicyDocuments, PolicySetError } from "../../core/policy/index.ts";
import type { PolicyDocument } from "../../core/policy/index.ts";
import type { Edge } from "../flows/edges.ts";
import { edgeKey } from "../flows/edges.ts";
import { flowMatches } from "../flows/store.ts";
import type { FlowFilter, FlowStore } from "../flows/store.ts";
import { HttpError, readJson, sendJson } from "../http/router.ts";
import type { Router } from "../http/router.ts";
import { registerUiRoutes } from "../ui/routes.ts";
import { registerMetricsRoute } from "../metrics/metrics.ts";
import type { ControlPlaneMetrics } from "../metrics/metrics.ts";
import { ModeStoreError, namespaceOf } from "./mode.ts";
import type { EffectiveMode, ModeScope, ModeStore } from "./mode.ts";
import { LOCAL_PARAM, mergedBody, recordKey, ReplicaFlows, type Unanswered } from "./replica-flows.ts";
import { RecentKeys } from "./replica-follow.ts";
import { simulate } from "./simulate.ts";
import { suggestPolicies } from "./suggest.ts";
import { parseSince } from "./time.ts";

export interface VisibilityDeps {
  readonly store: FlowStore;
  /** The flows of every live replica; omitted, this control plane's own. */
  readonly replicas?: ReplicaFlows;
  readonly modes: ModeStore;
  /** The policy documents in force right now. */
  readonly policies: () => readonly PolicyDocument[];
  /** When given, GET /metrics serves it. */
  readonly metrics?: ControlPlaneMetrics;
  readonly now?: () => number;
  /** Heartbeat interval of the Server-Sent Events stream (default 15 s). */
  readonly heartbeatMs?: number;
}

const MAX_LIMIT = 10_000;
/** A follower that stops reading is cut off rather than buffered without bound. */
const MAX_SSE_BACKLOG_BYTES = 4 * 1024 * 1024;

/**
 * The visibility API (JSON) and the web UI on the control plane's router:
 *
 * - `GET /api/flows?denied=&selector=k=v,..&workload=&edge=&since=&limit=&follow=` — recent flows,
 *   oldest first; with `follow=1` a Server-Sent Events stream (`event: flow`) of the backlog, then
 *   every new matching flow.
 * - `GET /api/graph` — nodes (workloads with labels, group and effective mode) and edges.
 * - `GET /api/policies` — the policies in force.
 * - `GET /api/mode`, `PUT /api/mode` `{ scope: mesh|namespace|workload, name?, mode: enforce|observe|null }`.
 * - `GET /api/policy/suggest?since=1h&exclude=k=v&edge=<id>` (exclude and edge repeatable) — YAML
 *   and summary, from the flows of the given edges only when edges are named.
 * - `POST /api/policy/simulate` `{ yaml, since?, replace? }` — the observed flows whose verdict changes.
 * - `GET /metrics` (with `deps.metrics`) and the UI (`/`, `/ui/*`).
 *
 * With several replicas, flows, graph, mode, suggest and simulate answer from every live replica's
 * flows (`replica-flows.ts`), flagged `partial` with the replicas that did not answer; `local=1`
 * answers from this replica's own (what replicas ask each other). A follow merges the live streams
 * of every replica too (`replica-follow.ts`).
 */
export function registerVisibilityRoutes(router: Router, deps: VisibilityDeps): void {
  const now = deps.now ?? Date.now;
  const replicas = deps.replicas ?? new ReplicaFlows({ store: deps.store, peers: () => [], token: "" });

  router.add("GET", "/api/flows", async (req, res) => {
    const q = query(req);
    const local = flag(q, LOCAL_PARAM);
    if (local && q.get("limit") === "all") {
      sendJson(res, 200, { flows: deps.store.all(flowFilter(withoutLimit(q), now())) });
      return;
    }
    const filter = flowFilter(q, now());
    if (flag(q, "follow")) return follow(req, res, deps, replicas, filter, local);
    const merged = await replicas.query(filter, local);
    sendJson(res, 200, mergedBody({ flows: merged.value }, merged.unanswered));
  });

  router.add("GET", "/api/graph", async (req, res) => {
    const q = query(req);
    const local = flag(q, LOCAL_PARAM);
    if (local && flag(q, "reports")) {
      sendJson(res, 200, { reports: replicas.reports() });
      return;
    }
    const merged = await replicas.edges(local);
    sendJson(res, 200, mergedBody(graph(merged.value, deps.modes), merged.unanswered));
  });

  router.add("GET", "/api/policies", (_req, res) => {
    sendJson(res, 200, { policies: deps.policies() });
  });

  router.add("GET", "/api/mode", async (req, res) => {
    const merged = await replicas.edges(flag(query(req), LOCAL_PARAM));
    sendJson(res, 200, mergedBody(modeView(deps, merged.value), merged.unanswered));
  });

  router.add("PUT", "/api/mode", async (req, res) => {
    const body = modeChange.safeParse(await readJson(req));
    if (!body.success) throw new HttpError(400, zodMessage(body.error));
    const { scope, name, mode } = body.data;
    let target: ModeScope;
    if (scope === "mesh") target = { kind: "mesh" };
    else if (!name) throw new HttpError(400, `scope ${scope} needs a name`);
    else target = scope === "namespace" ? { kind: "namespace", name } : { kind: "workload", spiffeId: name };
    try {
      await deps.modes.set(target, mode);
    } catch (err) {
      if (err instanceof ModeStoreError) throw new HttpError(400, err.message);
      throw err;
    }
    sendJson(res, 200, modeView(deps, (await replicas.edges(false)).value));
  });

  router.add("GET", "/api/policy/suggest", async (req, res) => {
    const q = query(req);
    const since = sinceParam(q, now(), "1h");
    let exclude: Labels[];
    try {
      exclude = q.getAll("exclude").map((s) => parseLabelList(s));
    } catch (err) {
      throw new HttpError(400, `exclude: ${(err as Error).message}`);
    }
    // Edges picked on the map: only their flows are evidence.
    const edges = new Set(q.getAll("edge"));
    const records = await replicas.all(since === undefined ? {} : { since }, flag(q, LOCAL_PARAM));
    const picked = edges.size === 0 ? records.value : records.value.filter((r) => edges.has(edgeKey(r)));
    const suggestion = suggestPolicies(picked, { exclude });
    sendJson(res, 200, mergedBody({ since, ...suggestion }, records.unanswered));
  });

  router.add("POST", "/api/policy/simulate", async (req, res) => {
    const body = simulateRequest.safeParse(await readJson(req, 4 << 20));
    if (!body.success) throw new HttpError(400, zodMessage(body.error));
    const parsed = parsePolicyDocuments(body.data.yaml, body.data.file ?? "proposal.yaml");
    if (!parsed.ok) {
      sendJson(res, 400, {
        error: "the proposed policies are invalid",
        errors: parsed.errors.map(formatPolicyError),
      });
      return;
    }
    const since = body.data.since === undefined ? undefined : parseSinceOr400(body.data.since, now());
    const records = await replicas.all(since === undefined ? {} : { since }, flag(query(req), LOCAL_PARAM));
    try {
      const result = simulate(records.value, {
        current: deps.policies(),
        proposed: parsed.documents.map((d) => d.document),
        replace: body.data.replace ?? false,
      });
      sendJson(res, 200, mergedBody(result, records.unanswered));
    } catch (err) {
      if (err instanceof PolicySetError) throw new HttpError(400, err.message);
      throw err;
    }
  });

  if (deps.metrics) registerMetricsRoute(router, deps.metrics);
  registerUiRoutes(router);
}

const modeChange = z.strictObject({
  scope: z.enum(["mesh", "namespace", "workload"]),
  name: z.string().min(1).max(2048).optional(),
  mode: z.enum(["enforce", "observe"]).nullable(),
});

const simulateRequest = z.strictObject({
  yaml: z.string().min(1),
  file: z.string().max(256).optional(),
  since: z.string().optional(),
  replace: z.boolean().optional(),
});

function zodMessage(err: z.ZodError): string {
  const issue = err.issues[0];
  return `${issue?.path.join(".") || "body"}: ${issue?.message ?? "invalid"}`;
}

function query(req: IncomingMessage): URLSearchParams {
  return new URL(req.url ?? "/", "http://localhost").searchParams;
}

function flag(q: URLSearchParams, name: string): boolean {
  const v = q.get(name);
  if (v === null) return false;
  if (v === "" || v === "1" || v === "true") return true;
  if (v === "0" || v === "false") return false;
  throw new HttpError(400, `${name} must be true or false, not "${v}"`);
}

function parseSinceOr400(text: string, now: number): number {
  try {
    return parseSince(text, now);
  } catch (err) {
    throw new HttpError(400, (err as Error).message);
  }
}

/** The query without its `limit` (`limit=all` is a replica's request for every record). */
function withoutLimit(q: URLSearchParams): URLSearchParams {
  const copy = new URLSearchParams(q);
  copy.delete("limit");
  return copy;
}

function sinceParam(q: URLSearchParams, now: number, fallback?: string): number | undefined {
  const v = q.get("since") ?? fallback;
  return v === undefined || v === "" ? undefined : parseSinceOr400(v, now);
}

function flowFilter(q: URLSearchParams, now: number): FlowFilter {
  const filter: { -readonly [K in keyof FlowFilter]: FlowFilter[K] } = {};
  const since = sinceParam(q, now);
  if (since !== undefined) filter.since = since;
  if (q.has("denied")) filter.denied = flag(q, "denied");
  const selector = q.get("selector");
  if (selector) {
    try {
      filter.selector = parseLabelList(selector);
    } catch (err) {
      throw new HttpError(400, `selector: ${(err as Error).message}`);
    }
  }
  const workload = q.get("workload");
  if (workload) filter.workload = workload;
  const edge = q.get("edge");
  if (edge) filter.edge = edge;
  const limit = q.get("limit");
  if (limit !== null) {
    const n = Number(limit);
    if (!Number.isInteger(n) || n < 1 || n > MAX_LIMIT) {
      throw new HttpError(400, `limit must be an integer 1-${MAX_LIMIT}, not "${limit}"`);
    }
    filter.limit = n;
  }
  return filter;
}

/** How far before a follow starts the other replicas' streams reach back, for reports still in flight. */
const FOLLOW_OVERLAP_MS = 30_000;
/** Record keys a follow remembers to send each record once. */
const FOLLOW_KEYS = 100_000;

/**
 * A follow: the merged backlog, then every new matching record of this replica and (unless
 * `local`) of every other live one, each once; `event: partial` names a replica whose flows the
 * stream lacks. Own records arriving while the backlog is gathered are held and sent after it.
 */
async function follow(
  req: IncomingMessage,
  res: ServerResponse,
  deps: VisibilityDeps,
  replicas: ReplicaFlows,
  filter: FlowFilter,
  local: boolean,
): Promise<void> {
  res.writeHead(200, {
    "content-type": "text/event-stream; charset=utf-8",
    "cache-control": "no-cache",
    connection: "keep-alive",
    "x-accel-buffering": "no",
  });
  const sent = new RecentKeys(FOLLOW_KEYS);
  const send = (r: FlowRecord) => {
    if (!sent.add(recordKey(r))) return;
    res.write(`id: ${r.id}\nevent: flow\ndata: ${JSON.stringify(r)}\n\n`);
    if (res.writableLength > MAX_SSE_BACKLOG_BYTES) res.destroy();
  };
  const partial = (unanswered: readonly Unanswered[]) =>
    res.write(`event: partial\ndata: ${JSON.stringify({ partial: true, unanswered })}\n\n`);
  const held: FlowRecord[] = [];
  let live = false;
  const deliver = (r: FlowRecord) => (live ? send(r) : held.push(r));
  const onFlows = (records: readonly FlowRecord[]) => {
    for (const r of records) if (flowMatches(r, filter)) deliver(r);
  };
  deps.store.on("flows", onFlows);
  const { limit: _limit, ...recent } = filter;
  const peers = local
    ? undefined
    : replicas.follow({ ...recent, since: Date.now() - FOLLOW_OVERLAP_MS }, deliver, (u) => partial([u]));
  const heartbeat = setInterval(() => {
    res.write(": ping\n\n");
    peers?.refresh();
  }, deps.heartbeatMs ?? 15_000);
  heartbeat.unref();
  const stop = () => {
    clearInterval(heartbeat);
    deps.store.off("flows", onFlows);
    peers?.close();
  };
  req.on("close", stop);
  res.on("close", stop);
  const backlog = await replicas.query(filter, local);
  if (res.destroyed) return;
  for (const r of backlog.value) send(r);
  if (backlog.unanswered.length > 0) partial(backlog.unanswered);
  res.write(": live\n\n");
  for (const r of held) send(r);
  held.length = 0;
  live = true;
}

export interface GraphNode {
  readonly id: string;
  readonly spiffeId?: string;
  readonly address?: string;
  readonly labels: Labels;
  readonly app?: string;
  readonly namespace?: string;
  readonly external: boolean;
  /** A person signed in through a user-access port (their own node, whatever address they used). */
  readonly user?: FlowUser;
  /** Effective enforcement mode (mesh workloads only). */
  readonly mode?: EffectiveMode;
}

export type EdgeStatus = "allowed" | "denied" | "mixed" | "would-deny";

export interface GraphEdge extends Edge {
  /** denied: only denials; mixed: some allowed, some denied; would-deny: observe mode let denials through. */
  readonly status: EdgeStatus;
}

export function edgeStatus(e: Edge): EdgeStatus {
  if (e.denied > 0) return e.allowed + e.wouldDeny > 0 ? "mixed" : "denied";
  if (e.wouldDeny > 0) return "would-deny";
  return "allowed";
}

function graph(edges: readonly Edge[], modes: ModeStore): { nodes: GraphNode[]; edges: GraphEdge[] } {
  const nodes = new Map<string, GraphNode>();
  const addNode = (end: Edge["source"]) => {
    if (nodes.has(end.id)) return;
    const app = end.labels.app ?? end.labels["app.kubernetes.io/name"];
    const namespace = namespaceOf(end.labels);
    nodes.set(end.id, {
      id: end.id,
      labels: end.labels,
      external: !end.spiffeId,
      ...(end.spiffeId
        ? { spiffeId: end.spiffeId, mode: modes.modeFor({ spiffeId: end.spiffeId, labels: end.labels }) }
        : {}),
      ...(end.address ? { address: end.address } : {}),
      ...(end.user ? { user: end.user } : {}),
      ...(app ? { app } : {}),
      ...(namespace ? { namespace } : {}),
    });
  };
  for (const e of edges) {
    addNode(e.source);
    addNode(e.destination);
  }
  return {
    nodes: [...nodes.values()].sort((a, b) => a.id.localeCompare(b.id)),
    edges: edges.map((e) => ({ ...e, status: edgeStatus(e) })),
  };
}

function modeView(deps: VisibilityDeps, edges: readonly Edge[]) {
  const seen = new Map<string, Labels>();
  for (const e of edges) {
    for (const end of [e.source, e.destination]) if (end.spiffeId) seen.set(end.spiffeId, end.labels);
  }
  return {
    settings: deps.modes.settings(),
    workloads: [...seen.entries()]
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([spiffeId, labels]) => ({ spiffeId, labels, ...deps.modes.modeFor({ spiffeId, labels }) })),
  };
}
