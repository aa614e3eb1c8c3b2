import { readFile } from "node:fs/promises";
import { request } from "node:https";
import type { IncomingMessage } from "node:http";
import type { Pod, PodList } from "kubernetes-types/core/v1.js";
import type { WatchEvent } from "kubernetes-types/meta/v1.js";

/** Where the cluster's API server is and how the control plane authenticates to it. */
export interface KubeApiSettings {
  /** `https://host:port` of the API server. */
  readonly url: string;
  /** PEM file of the CA that signed the API server's certificate. */
  readonly caFile: string;
  /** File holding the bearer token (re-read on every request: projected tokens rotate). */
  readonly tokenFile: string;
  /** Bound on one GET or one list page (default 5 s). */
  readonly requestTimeoutMs?: number;
  /** How long the API server keeps one watch open before the client re-watches (default 240 s). */
  readonly watchTimeoutSeconds?: number;
}

/** Where a pod's own service-account credentials are mounted (the in-cluster defaults). */
export const IN_CLUSTER_DIR = "/var/run/secrets/kubernetes.io/serviceaccount";

/** A failed call, naming the API server, the request and why. `status` is the HTTP status if any. */
export class KubeApiError extends Error {
  constructor(
    readonly apiServer: string,
    readonly path: string,
    readonly reason: string,
    readonly status?: number,
  ) {
    super(`Kubernetes API server ${apiServer}: GET ${path}: ${reason}`);
  }
}

/** The longest watch-event line accepted: a pod object is far smaller. */
const MAX_LINE_BYTES = 4 * 1024 * 1024;
/** The longest non-streamed response body accepted. */
const MAX_BODY_BYTES = 32 * 1024 * 1024;

/**
 * The subset of the Kubernetes API the pod attestor uses: read a pod, list a namespace's pods
 * (paged), and watch them from a resourceVersion. HTTPS with the configured CA only.
 */
export class KubeApiClient {
  readonly url: string;

  constructor(private readonly settings: KubeApiSettings) {
    this.url = settings.url.replace(/\/+$/, "");
  }

  getPod(namespace: string, name: string, signal?: AbortSignal): Promise<Pod> {
    return this.getJson<Pod>(
      `/api/v1/namespaces/${encodeURIComponent(namespace)}/pods/${encodeURIComponent(name)}`,
      signal,
    );
  }

  /** Every pod of the namespace and the list's resourceVersion (where a watch resumes). */
  async listPods(namespace: string, signal?: AbortSignal): Promise<{ pods: Pod[]; resourceVersion: string }> {
    const pods: Pod[] = [];
    let cont = "";
    for (;;) {
      const query = new URLSearchParams({ limit: "500" });
      if (cont) query.set("continue", cont);
      const page = await this.getJson<PodList>(
        `/api/v1/namespaces/${encodeURIComponent(namespace)}/pods?${query.toString()}`,
        signal,
      );
      if (!Array.isArray(page.items))
        throw new KubeApiError(this.url, `/api/v1/namespaces/${namespace}/pods`, "list has no items");
      pods.push(...page.items);
      cont = page.metadata?.continue ?? "";
      if (!cont) return { pods, resourceVersion: page.metadata?.resourceVersion ?? "" };
    }
  }

  /**
   * Watches the namespace's pods from `resourceVersion`, calling `onEvent` for each event in order,
   * until the server ends the watch or `onEvent` returns false (resolves) or it fails (rejects; a
   * 410 Gone answered before the stream as a KubeApiError of status 410).
   */
  async watchPods(
    namespace: string,
    resourceVersion: string,
    onEvent: (event: WatchEvent) => boolean | void,
    signal: AbortSignal,
  ): Promise<void> {
    const query = new URLSearchParams({
      watch: "1",
      resourceVersion,
      allowWatchBookmarks: "true",
      timeoutSeconds: String(this.settings.watchTimeoutSeconds ?? 240),
    });
    const path = `/api/v1/namespaces/${encodeURIComponent(namespace)}/pods?${query.toString()}`;
    const res = await this.open(path, signal, (this.settings.watchTimeoutSeconds ?? 240) * 1000 + 30_000);
    await new Promise<void>((resolve, reject) => {
      let pending = "";
      let stopped = false;
      const fail = (reason: string) => {
        res.destroy();
        reject(new KubeApiError(this.url, path, reason));
      };
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => {
        pending += chunk;
        for (let nl = pending.indexOf("\n"); nl >= 0; nl = pending.indexOf("\n")) {
          const line = pending.slice(0, nl).trim();
          pending = pending.slice(nl + 1);
          if (line === "") continue;
          let event: WatchEvent;
          try {
            event = JSON.parse(line) as WatchEvent;
          } catch {
            fail("watch event is not JSON");
            return;
          }
          if (onEvent(event) === false) {
            stopped = true;
            res.destroy();
            resolve();
            return;
          }
        }
        if (pending.length > MAX_LINE_BYTES) fail(`watch event longer than ${MAX_LINE_BYTES} bytes`);
      });
      res.on("end", () => resolve());
      res.on("error", (err) => reject(new KubeApiError(this.url, path, err.message)));
      res.on("close", () => {
        if (!res.complete && !stopped) reject(new KubeApiError(this.url, path, "watch connection closed"));
      });
    });
  }

  private async getJson<T>(path: string, signal?: AbortSignal): Promise<T> {
    const res = await this.open(path, signal, this.settings.requestTimeoutMs ?? 5_000);
    const chunks: Buffer[] = [];
    let size = 0;
    await new Promise<void>((resolve, reject) => {
      res.on("data", (chunk: Buffer) => {
        size += chunk.length;
        if (size > MAX_BODY_BYTES) {
          res.destroy();
          reject(new KubeApiError(this.url, path, `response larger than ${MAX_BODY_BYTES} bytes`));
        } else chunks.push(chunk);
      });
      res.on("end", () => resolve());
      res.on("error", (err) => reject(new KubeApiError(this.url, path, err.message)));
    });
    try {
      return JSON.parse(Buffer.concat(chunks).toString("utf8")) as T;
    } catch {
      throw new KubeApiError(this.url, path, "response is not JSON");
    }
  }

  /** Sends the GET; resolves with a 200 response, rejects naming the status or transport failure. */
  private async open(
    path: string,
    signal: AbortSignal | undefined,
    timeoutMs: number,
  ): Promise<IncomingMessage> {
    let ca: string;
    let token: string;
    try {
      [ca, token] = await Promise.all([
        readFile(this.settings.caFile, "utf8"),
        readFile(this.settings.tokenFile, "utf8").then((t) => t.trim()),
      ]);
    } catch (err) {
      throw new KubeApiError(this.url, path, `cannot read credentials: ${(err as Error).message}`);
    }
    const res = await new Promise<IncomingMessage>((resolve, reject) => {
      const req = request(
        `${this.url}${path}`,
        {
          method: "GET",
          ca,
          headers: { authorization: `Bearer ${token}`, accept: "application/json" },
          signal,
          timeout: timeoutMs,
        },
        resolve,
      );
      req.on("timeout", () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
      req.on("error", (err) => reject(new KubeApiError(this.url, path, err.message)));
      req.end();
    });
    if (res.statusCode === 200) return res;
    const body = await readSome(res);
    throw new KubeApiError(this.url, path, statusReason(res.statusCode ?? 0, body), res.statusCode);
  }
}

async function readSome(res: IncomingMessage): Promise<string> {
  let text = "";
  res.setEncoding("utf8");
  for await (const chunk of res) {
    text += chunk as string;
    if (text.length > 4096) {
      res.destroy();
      break;
    }
  }
  return text;
}

/** "HTTP 404: pods "x" not found" from a Status body, else the status alone. */
function statusReason(status: number, body: string): string {
  try {
    const parsed = JSON.parse(body) as { message?: unknown };
    if (typeof parsed.message === "string") return `HTTP ${status}: ${parsed.message}`;
  } catch {
    // Not a Status object: the status code says enough.
  }
  return `HTTP ${status}`;
}
