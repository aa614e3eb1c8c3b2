import type { FlowRecord } from "../../core/flow.ts";
import { authorizationHeader, refusedTokenMessage } from "./api-credential.ts";
import type { ApiCredential } from "./api-credential.ts";
import type { PolicyDocument } from "../../core/policy/index.ts";
import type { EnforcementMode } from "../../core/policy/index.ts";
import type { ModeSettings, EffectiveMode } from "../../controlplane/visibility/mode.ts";
import type { GraphEdge, GraphNode } from "../../controlplane/visibility/routes.ts";
import type { SimulationResult } from "../../controlplane/visibility/simulate.ts";
import type { SuggestSummary } from "../../controlplane/visibility/suggest.ts";
import type { PolicyDiff, PolicyFileView, ProposedFile } from "../../controlplane/policy-store/files.ts";
import { serverSentEvents } from "../../core/sse.ts";
import { CliError, exitCodeForStatus } from "./exit-codes.ts";

/** A typed client of the visibility API (routes.ts), used by the CLI. */

/** A refusal or failure of the API; `status` 0 means no control plane answered. */
export class ApiError extends CliError {
  constructor(
    readonly status: number,
    message: string,
    readonly details: readonly string[] = [],
  ) {
    super(message, exitCodeForStatus(status));
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

/** What a merged answer, or a follow stream's `partial` event, says of the replicas it lacks. */
interface PartialEvent {
  readonly unanswered?: readonly { replica: string; api: string; reason: string }[];
}

export class VisibilityClient {
  private readonly bases: readonly string[];
  /** The replica that answered last: requests go there first. */
  private base: string;
  /** Replicas whose flows the last answer could not include (they did not answer the replica asked). */
  unreachable: readonly string[] = [];

  /**
   * `baseUrl` is one control plane or several replicas comma-separated: a request goes to the one
   * that answered last and moves on when it cannot be reached. `credential` is the admin token
   * presented as a bearer token on every request.
   */
  constructor(
    baseUrl: string,
    private readonly credential?: ApiCredential,
    private readonly transport: typeof fetch = fetch,
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
   * The newest matching flows. Each replica keeps the flows its own sidecars report and answers with
   * every live replica's; those that did not answer it are listed in `unreachable` (their flows are
   * missing until they return).
   */
  async flows(q: FlowQuery = {}): Promise<FlowRecord[]> {
    return (await this.get<{ flows: FlowRecord[] }>(`/api/flows?${flowParams(q)}`)).flows;
  }

  /**
   * Streams matching flows (the recent backlog first) until `signal` aborts or the server ends it;
   * `onUnanswered` hears of replicas whose flows the stream lacks from then on.
   */
  async follow(
    q: FlowQuery,
    onFlow: (r: FlowRecord) => void,
    signal?: AbortSignal,
    onUnanswered: (missing: readonly string[]) => void = () => undefined,
  ): Promise<void> {
    const params = flowParams(q);
    params.set("follow", "1");
    const res = await this.fetch(`/api/flows?${params}`, { signal: signal ?? null });
    if (!res.body) return;
    try {
      for await (const e of serverSentEvents(res.body)) {
        if (e.event === "flow") onFlow(JSON.parse(e.data) as FlowRecord);
        else if (e.event === "partial") {
          this.noted(JSON.parse(e.data));
          onUnanswered(this.unreachable);
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

  /** Every policy file on the control plane, as written (the watched directory's and applied ones). */
  policyFiles(): Promise<{ revision: number; files: PolicyFileView[] }> {
    return this.get("/api/policy/files");
  }

  policyFile(name: string): Promise<PolicyFileView> {
    return this.get(`/api/policy/files/${encodeURIComponent(name)}`);
  }

  async deletePolicy(name: string): Promise<{ name: string; revision: number }> {
    const res = await this.fetch(`/api/policy/files/${encodeURIComponent(name)}`, { method: "DELETE" });
    return (await res.json()) as { name: string; revision: number };
  }

  /** What applying these files would change: policies, and recorded flows whose verdict flips. */
  diff(
    files: readonly ProposedFile[],
    since?: string,
  ): Promise<PolicyDiff & { simulation: SimulationResult }> {
    return this.send("POST", "/api/policy/diff", { files, ...(since ? { since } : {}) });
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
    return this.noted<T>(await (await this.fetch(path)).json());
  }

  private async send<T>(method: string, path: string, body: unknown): Promise<T> {
    const res = await this.fetch(path, {
      method,
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    return this.noted<T>(await res.json());
  }

  /** Notes the replicas a merged answer lacks (`partial`, `unanswered`). */
  private noted<T>(body: unknown): T {
    const missing = (body as PartialEvent).unanswered;
    this.unreachable = (missing ?? []).map((m) => `${m.replica} at ${m.api} (${m.reason})`);
    return body as T;
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
      res = await this.transport(`${base}${path}`, {
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
