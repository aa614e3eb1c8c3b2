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

/** What policy decides on: the fields the upstream receives, XFCC and user fields included. */
export function requestFacts(
  req: RequestHead,
  clientCert: string | undefined,
  user: Readonly<Record<string, string>> | undefined,
): HttpRequestFacts {
  const headers = withForwardedClientCert(req.byName, clientCert, user);
  return req.host === undefined
    ? { method: req.method, path: req.target, headers }
    : { method: req.method, path: req.target, host: req.host, headers };
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
