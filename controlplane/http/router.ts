import type { IncomingMessage, ServerResponse } from "node:http";

/** Parameters captured from `:name` segments of a route pattern. */
export type RouteParams = Readonly<Record<string, string>>;

export type RouteHandler = (
  req: IncomingMessage,
  res: ServerResponse,
  params: RouteParams,
) => void | Promise<void>;

interface Route {
  readonly method: string;
  readonly segments: readonly string[];
  readonly handler: RouteHandler;
}

/** Typed HTTP error: the router answers with its status and a JSON body `{ "error": message }`. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/**
 * The control plane's HTTP API router. Each feature registers its own routes; the router owns
 * matching, JSON errors and the "no such route" answers so every endpoint fails the same way.
 */
export class Router {
  private readonly routes: Route[] = [];

  add(method: string, pattern: string, handler: RouteHandler): void {
    this.routes.push({ method: method.toUpperCase(), segments: splitPath(pattern), handler });
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
    for (const route of this.routes) {
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
      try {
        await route.handler(req, res, params);
      } catch (err) {
        const status = err instanceof HttpError ? err.status : 500;
        const message = err instanceof Error ? err.message : String(err);
        if (!res.headersSent) sendJson(res, status, { error: message });
        else res.destroy();
      }
      return;
    }
    sendJson(res, pathMatched ? 405 : 404, {
      error: pathMatched ? `method ${req.method} not allowed on ${url.pathname}` : `no route ${url.pathname}`,
    });
  }
}

export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
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
