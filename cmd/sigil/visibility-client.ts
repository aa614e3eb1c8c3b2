import type { FlowRecord } from "../../core/flow.ts";
import { authorizationHeader, refusedTokenMessage } from "./api-credential.ts";
import type { ApiCredential } from "./api-credential.ts";
import type { PolicyDocument } from "../../core/policy/index.ts";
import type { EnforcementMode } from "../../core/policy/index.ts";
import type { ModeSettings, EffectiveMode } from "../../controlplane/visibility/mode.ts";
import type { GraphEdge, GraphNode } from "../../controlplane/visibility/routes.ts";
import type { SimulationResult } from "../../controlplane/visibility/simulate.ts";
import type { SuggestSummary } from "../../controlplane/visibility/suggest.ts";

/** A typed client of the visibility API (routes.ts), used by the CLI. */

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly details: readonly string[] = [],
  ) {
    super(message);
  }
}

export interface FlowQuery {
  readonly denied?: boolean;
  readonly selector?: string;
  readonly since?: string;
  readonly limit?: number;
  readonly workload?: string;
}

export interface ModeView {
  readonly settings: ModeSettings;
  readonly workloads: readonly ({ spiffeId: string; labels: Record<string, string> } & EffectiveMode)[];
}

export class VisibilityClient {
  private readonly base: string;

  /** `credential` is the admin token presented as a bearer token on every request. */
  constructor(
    baseUrl: string,
    private readonly credential?: ApiCredential,
  ) {
    let url: URL;
    try {
      url = new URL(baseUrl);
    } catch {
      throw new ApiError(0, `control plane address "${baseUrl}" is not a URL (e.g. http://127.0.0.1:15080)`);
    }
    this.base = url.toString().replace(/\/$/, "");
  }

  async flows(q: FlowQuery = {}): Promise<FlowRecord[]> {
    return (await this.get<{ flows: FlowRecord[] }>(`/api/flows?${flowParams(q)}`)).flows;
  }

  /** Streams matching flows (the recent backlog first) until `signal` aborts or the server ends it. */
  async follow(q: FlowQuery, onFlow: (r: FlowRecord) => void, signal?: AbortSignal): Promise<void> {
    const params = flowParams(q);
    params.set("follow", "1");
    const res = await this.fetch(`/api/flows?${params}`, { signal: signal ?? null });
    if (!res.body) return;
    const decoder = new TextDecoder();
    let buffer = "";
    try {
      for await (const chunk of res.body) {
        buffer += decoder.decode(chunk as Uint8Array, { stream: true });
        let end: number;
        while ((end = buffer.indexOf("\n\n")) !== -1) {
          const event = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const data = event
            .split("\n")
            .filter((l) => l.startsWith("data: "))
            .map((l) => l.slice(6))
            .join("\n");
          if (data && /^event: flow$/m.test(event)) onFlow(JSON.parse(data) as FlowRecord);
        }
      }
    } catch (err) {
      if (signal?.aborted) return;
      throw err;
    }
  }

  graph(): Promise<{ nodes: GraphNode[]; edges: GraphEdge[] }> {
    return this.get("/api/graph");
  }

  async policies(): Promise<PolicyDocument[]> {
    return (await this.get<{ policies: PolicyDocument[] }>("/api/policies")).policies;
  }

  suggest(
    since: string,
    exclude: readonly string[] = [],
  ): Promise<{ since: number; yaml: string; summary: SuggestSummary }> {
    const params = new URLSearchParams({ since });
    for (const e of exclude) params.append("exclude", e);
    return this.get(`/api/policy/suggest?${params}`);
  }

  simulate(body: {
    yaml: string;
    file?: string;
    since?: string;
    replace?: boolean;
  }): Promise<SimulationResult> {
    return this.send("POST", "/api/policy/simulate", body);
  }

  mode(): Promise<ModeView> {
    return this.get("/api/mode");
  }

  setMode(
    scope: "mesh" | "namespace" | "workload",
    name: string | undefined,
    mode: EnforcementMode | null,
  ): Promise<ModeView> {
    return this.send("PUT", "/api/mode", { scope, ...(name ? { name } : {}), mode });
  }

  private async get<T>(path: string): Promise<T> {
    return (await (await this.fetch(path)).json()) as T;
  }

  private async send<T>(method: string, path: string, body: unknown): Promise<T> {
    const res = await this.fetch(path, {
      method,
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    return (await res.json()) as T;
  }

  private async fetch(path: string, init: RequestInit = {}): Promise<Response> {
    let res: Response;
    try {
      res = await fetch(`${this.base}${path}`, {
        ...init,
        headers: { ...authorizationHeader(this.credential), ...(init.headers as Record<string, string>) },
      });
    } catch (err) {
      if ((err as Error).name === "AbortError") throw err;
      const cause = (err as { cause?: { message?: string } }).cause?.message ?? (err as Error).message;
      throw new ApiError(0, `cannot reach the control plane at ${this.base}: ${cause}`);
    }
    if (!res.ok) {
      const body = (await res.json().catch(() => ({}))) as { error?: string; errors?: string[] };
      if (res.status === 401)
        throw new ApiError(401, refusedTokenMessage(this.credential, body.error ?? res.statusText));
      throw new ApiError(res.status, body.error ?? `${res.status} ${res.statusText}`, body.errors ?? []);
    }
    return res;
  }
}

function flowParams(q: FlowQuery): URLSearchParams {
  const p = new URLSearchParams();
  if (q.denied !== undefined) p.set("denied", String(q.denied));
  if (q.selector) p.set("selector", q.selector);
  if (q.since) p.set("since", q.since);
  if (q.limit !== undefined) p.set("limit", String(q.limit));
  if (q.workload) p.set("workload", q.workload);
  return p;
}
