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
  private readonly bases: readonly string[];
  /** The replica that answered last: requests go there first. */
  private base: string;
  /** Replicas whose flows the last `flows()` could not include (they did not answer). */
  unreachable: readonly string[] = [];

  /**
   * `baseUrl` is one control plane or several replicas comma-separated: a request goes to the one
   * that answered last and moves on when it cannot be reached. `credential` is the admin token
   * presented as a bearer token on every request.
   */
  constructor(
    baseUrl: string,
    private readonly credential?: ApiCredential,
  ) {
    this.bases = baseUrl.split(",").map((one) => {
      try {
        return new URL(one.trim()).toString().replace(/\/$/, "");
      } catch {
        throw new ApiError(0, `control plane address "${one}" is not a URL (e.g. http://127.0.0.1:15080)`);
      }
    });
    this.base = this.bases[0] as string;
  }

  /**
   * The newest matching flows. Each replica keeps the flows its own sidecars report, so with
   * several replicas this asks every one and merges; replicas that do not answer are listed in
   * `unreachable` (their flows are missing until they return).
   */
  async flows(q: FlowQuery = {}): Promise<FlowRecord[]> {
    const path = `/api/flows?${flowParams(q)}`;
    if (this.bases.length === 1) return (await this.get<{ flows: FlowRecord[] }>(path)).flows;
    const answers = await Promise.allSettled(
      this.bases.map(
        async (base) => (await this.fetchFrom(base, path)).json() as Promise<{ flows: FlowRecord[] }>,
      ),
    );
    const merged: FlowRecord[] = [];
    const unreachable: string[] = [];
    answers.forEach((a, i) => {
      if (a.status === "fulfilled") merged.push(...a.value.flows);
      else if (a.reason instanceof ApiError && a.reason.status === 0)
        unreachable.push(this.bases[i] as string);
      else throw a.reason;
    });
    if (unreachable.length === this.bases.length)
      throw new ApiError(0, `cannot reach any control plane replica (${this.bases.join(", ")})`);
    this.unreachable = unreachable;
    merged.sort((a, b) => a.time - b.time);
    return merged.slice(Math.max(0, merged.length - (q.limit ?? 100)));
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

  /** Stores one policy file (every replica compiles it); the server refuses one that does not validate. */
  async applyPolicy(name: string, yaml: string): Promise<{ name: string; revision: number }> {
    const res = await this.fetch(`/api/policy/files/${encodeURIComponent(name)}`, {
      method: "PUT",
      headers: { "content-type": "application/yaml" },
      body: yaml,
    });
    return (await res.json()) as { name: string; revision: number };
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

  /** Sends to the replica that answered last, moving on to the others while one cannot be reached. */
  private async fetch(path: string, init: RequestInit = {}): Promise<Response> {
    const order = [this.base, ...this.bases.filter((b) => b !== this.base)];
    let lastError: unknown;
    for (const base of order) {
      try {
        const res = await this.fetchFrom(base, path, init);
        this.base = base;
        return res;
      } catch (err) {
        if (!(err instanceof ApiError && err.status === 0) || init.body instanceof ReadableStream) throw err;
        lastError = err;
      }
    }
    throw lastError;
  }

  private async fetchFrom(base: string, path: string, init: RequestInit = {}): Promise<Response> {
    let res: Response;
    try {
      res = await fetch(`${base}${path}`, {
        ...init,
        headers: { ...authorizationHeader(this.credential), ...(init.headers as Record<string, string>) },
      });
    } catch (err) {
      if ((err as Error).name === "AbortError") throw err;
      const cause = (err as { cause?: { message?: string } }).cause?.message ?? (err as Error).message;
      throw new ApiError(0, `cannot reach the control plane at ${base}: ${cause}`);
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
