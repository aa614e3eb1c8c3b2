/**
 * Reading back what the sidecars reported: the control plane's GET /api/flows, and which of those
 * records belong to one scenario (same endpoints, port, request and time window).
 */
import type { FlowEndpoint, FlowRecord } from "../../core/flow.ts";
import type { Scenario } from "./traffic.ts";
import type { WorkloadName } from "./topology.ts";

/** What matching needs to know of the mesh: each workload's address and SPIFFE ID. */
export interface MeshView {
  host(name: WorkloadName): { ipv4: string };
  spiffeId(name: WorkloadName): string;
}

export interface Timed<T> {
  item: T;
  startedAt: number;
  endedAt: number;
}

/** The control plane's HTTP API: base URL (e.g. http://127.0.0.1:15080) and its admin token. */
export interface ApiAccess {
  readonly http: string;
  readonly token: string;
}

export async function fetchFlows(api: ApiAccess, sinceMs: number): Promise<FlowRecord[]> {
  const response = await fetch(`${api.http}/api/flows?since=${sinceMs}&limit=10000`, {
    headers: { authorization: `Bearer ${api.token}` },
    signal: AbortSignal.timeout(10_000),
  });
  if (!response.ok)
    throw new Error(`GET /api/flows: HTTP ${response.status} ${(await response.text()).trim()}`);
  const body = (await response.json()) as { flows?: FlowRecord[] };
  if (!Array.isArray(body.flows)) throw new Error("GET /api/flows: answer without a flows array");
  return body.flows;
}

/**
 * Slack around a scenario's window. Scenarios run one after another and every record is stamped with
 * the moment of its decision, which falls inside the client's run; the slack only absorbs rounding.
 * It must stay small: consecutive scenarios can look alike (a retried call, two paths that normalize
 * to the same one), and only the window tells their records apart.
 */
const WINDOW_SLACK_MS = 50;

function endpointIs(mesh: MeshView, endpoint: FlowEndpoint, name: WorkloadName): boolean {
  return (
    endpoint.spiffeId === mesh.spiffeId(name) ||
    endpoint.address === mesh.host(name).ipv4 ||
    endpoint.labels.app === name
  );
}

export function flowsOf(mesh: MeshView, run: Timed<Scenario>, flows: readonly FlowRecord[]): FlowRecord[] {
  const s = run.item;
  return flows.filter(
    (f) =>
      f.time >= run.startedAt - WINDOW_SLACK_MS &&
      f.time <= run.endedAt + WINDOW_SLACK_MS &&
      f.port === s.port &&
      endpointIs(mesh, f.source, s.from) &&
      endpointIs(mesh, f.destination, s.to) &&
      (s.http === undefined || (f.http?.method === s.http.method && f.http.path === s.http.path)),
  );
}

/** Polls the flow API until every scenario has at least one record, or the deadline passes. */
export async function waitForFlows(
  mesh: MeshView,
  api: ApiAccess,
  runs: readonly Timed<Scenario>[],
  timeoutMs: number,
): Promise<FlowRecord[]> {
  const since = Math.min(...runs.map((r) => r.startedAt)) - WINDOW_SLACK_MS;
  const deadline = Date.now() + timeoutMs;
  while (true) {
    const flows = await fetchFlows(api, since);
    const complete = runs.every((r) => flowsOf(mesh, r, flows).length > 0);
    if (complete || Date.now() > deadline) return flows;
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}
