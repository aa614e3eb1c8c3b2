import type { HttpRequestFacts } from "../../../core/policy/index.ts";
import { withForwardedClientCert } from "../client-cert.ts";
import type { BodiesOnGetHead } from "../bodiless-methods.ts";
import { bodyRefusal, refusesBody } from "../bodiless-methods.ts";
import type { RequestHead } from "./head.ts";

/** Why a request is refused (400) before policy sees it, or null when it goes on to be decided. */
export function refusedBeforeDecision(req: RequestHead, bodiesOnGetHead: BodiesOnGetHead): string | null {
  if (req.method === "CONNECT") return "CONNECT is not proxied";
  if (refusesBody(req.method, bodiesOnGetHead) && requestHasBody(req)) {
    const framing = req.chunked ? "Transfer-Encoding: chunked" : `Content-Length: ${req.contentLength}`;
    return bodyRefusal(req.method, framing);
  }
  return null;
}

/**
 * What policy decides on: the fields the upstream receives, XFCC and user fields included. They are
 * gathered by name only if a rule reads a header; most policies read none.
 */
class Http1RequestFacts implements HttpRequestFacts {
  readonly method: string;
  readonly path: string;
  readonly host: string | undefined;
  private fields: HttpRequestFacts["headers"] | undefined = undefined;

  constructor(
    private readonly req: RequestHead,
    private readonly clientCert: string | undefined,
    private readonly user: Readonly<Record<string, string>> | undefined,
  ) {
    this.method = req.method;
    this.path = req.target;
    this.host = req.host;
  }

  get headers(): HttpRequestFacts["headers"] {
    return (this.fields ??= withForwardedClientCert(this.req.byName, this.clientCert, this.user));
  }
}

export function requestFacts(
  req: RequestHead,
  clientCert: string | undefined,
  user: Readonly<Record<string, string>> | undefined,
): HttpRequestFacts {
  return new Http1RequestFacts(req, clientCert, user);
}

/**
 * Whether the client connection stays open after the proxy refused a request itself. An unread
 * request body would have to be drained to find the next request, and a refused upgrade leaves the
 * client unsure what the connection speaks: those close.
 */
export function keepsAliveAfterRefusal(req: RequestHead, status: number, draining: boolean): boolean {
  return (
    !draining &&
    status === 403 &&
    req.minor === 1 &&
    req.keepAlive &&
    !req.upgrade &&
    !req.chunked &&
    (req.contentLength ?? 0) === 0
  );
}

function requestHasBody(req: RequestHead): boolean {
  return req.chunked || (req.contentLength ?? 0) > 0;
}
