import type { IncomingMessage, ServerResponse } from "node:http";

/** Parameters captured from `:name` segments of a route pattern. */
export type RouteParams = Readonly<Record<string, string>>;

export type RouteHandler = (
  req: IncomingMessage,
  res: ServerResponse,
  params: RouteParams,
) => void | Promise<void>;

/**
 * Decides whether a request may reach a protected route: returns when it may, throws an HttpError
 * (401, 403) naming the reason when it may not. It sees the response so it can tie long-lived
 * answers (event streams) to the credential that opened them.
 */
export type RequestGuard = (req: IncomingMessage, res: ServerResponse) => void | Promise<void>;

/** A registered route as the route table lists it. */
export interface RouteInfo {
  readonly method: string;
  readonly pattern: string;
  /** Reachable without credentials: only the health check, the version, the sign-in and the static UI shell. */
  readonly public: boolean;
}

interface Route extends RouteInfo {
  readonly segments: readonly string[];
  readonly handler: RouteHandler;
}

/** Typed HTTP error: the router answers with its status, `headers` and a JSON body `{ "error": message }`. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly headers: Readonly<Record<string, string>> = {},
  ) {
    super(message);
  }
}

/**
 * The control plane's HTTP API router. Each feature registers its own routes; the router owns
 * matching, authentication, JSON errors and the "no such route" answers so every endpoint fails
 * the same way. Routes are protected by the guard unless registered with `addPublic`, so a route
 * added without thought about access is closed, and a request that matches no public route (an
 * unknown path included) is authenticated before anything else is said about it.
 */
export class Router {
  private readonly table: Route[] = [];

  constructor(private readonly guard: RequestGuard) {}

  /** A route only authenticated callers reach. */
  add(method: string, pattern: string, handler: RouteHandler): void {
    this.register(method, pattern, handler, false);
  }

  /** A route anyone who can connect reaches: it must reveal and change nothing that needs a credential. */
  addPublic(method: string, pattern: string, handler: RouteHandler): void {
    this.register(method, pattern, handler, true);
  }

  routes(): RouteInfo[] {
    return this.table.map(({ method, pattern, public: open }) => ({ method, pattern, public: open }));
  }

  private register(method: string, pattern: string, handler: RouteHandler, open: boolean): void {
    this.table.push({
      method: method.toUpperCase(),
      pattern,
      public: open,
      segments: splitPath(pattern),
      handler,
    });
  }

  /** Never rejects: every failure, a malformed request target included, becomes a JSON error answer. */
  async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    let url: URL;
    try {
      url = new URL(req.url ?? "/", "http://localhost");
    } catch {
      sendJson(res, 400, { error: `malformed request target ${JSON.stringify(req.url)}` });
      return;
    }
    const path = splitPath(url.pathname);
    let pathMatched = false;
    let found: { route: Route; params: Record<string, string> } | undefined;
    for (const route of this.table) {
      let params: Record<string, string> | null;
      try {
        params = matchSegments(route.segments, path);
      } catch {
        sendJson(res, 400, { error: `malformed percent-encoding in ${url.pathname}` });
        return;
      }
      if (!params) continue;
      pathMatched = true;
      if (route.method !== req.method) continue;
      found = { route, params };
      break;
    }
    try {
      if (!found?.route.public) await this.guard(req, res);
      if (!found) {
        throw new HttpError(
          pathMatched ? 405 : 404,
          pathMatched ? `method ${req.method} not allowed on ${url.pathname}` : `no route ${url.pathname}`,
        );
      }
      await found.route.handler(req, res, found.params);
    } catch (err) {
      const status = err instanceof HttpError ? err.status : 500;
      const message = err instanceof Error ? err.message : String(err);
      if (!res.headersSent)
        sendJson(res, status, { error: message }, err instanceof HttpError ? err.headers : {});
      else res.destroy();
    }
  }
}

export function sendJson(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Readonly<Record<string, string>> = {},
): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    ...headers,
    "content-type": "application/json",
    "content-length": Buffer.byteLength(text),
  });
  res.end(text);
}

/** Reads a JSON request body of at most `limit` bytes; throws HttpError 400/413 naming the problem. */
export async function readJson(req: IncomingMessage, limit = 1 << 20): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    const buf = chunk as Buffer;
    size += buf.length;
    if (size > limit) throw new HttpError(413, `request body larger than ${limit} bytes`);
    chunks.push(buf);
  }
  const text = Buffer.concat(chunks).toString("utf8");
  if (text.trim() === "") return {};
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new HttpError(400, `request body is not valid JSON: ${(err as Error).message}`);
  }
}

function splitPath(path: string): string[] {
  return path.split("/").filter((s) => s !== "");
}

function matchSegments(pattern: readonly string[], path: readonly string[]): Record<string, string> | null {
  if (pattern.length !== path.length) return null;
  const params: Record<string, string> = {};
  for (let i = 0; i < pattern.length; i++) {
    const p = pattern[i] as string;
    const s = path[i] as string;
    if (p.startsWith(":")) params[p.slice(1)] = decodeURIComponent(s);
    else if (p !== s) return null;
  }
  return params;
}
