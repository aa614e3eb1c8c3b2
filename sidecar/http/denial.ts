import type { Decision } from "../../core/policy/index.ts";

/** The short JSON body of a refused HTTP request: which decision refused it and why. */
export function denialBody(status: 400 | 403 | 502, decision: Pick<Decision, "policy" | "reason">): string {
  const error = status === 403 ? "forbidden" : status === 400 ? "bad request" : "upstream unavailable";
  return JSON.stringify({ error, policy: decision.policy, reason: decision.reason });
}

const STATUS_TEXT: Record<400 | 403 | 408 | 502, string> = {
  400: "Bad Request",
  403: "Forbidden",
  408: "Request Timeout",
  502: "Bad Gateway",
};

/** A complete HTTP/1.1 response with a JSON body, closing the connection unless `keepAlive`. */
export function rawResponse(status: 400 | 403 | 408 | 502, body: string, keepAlive = false): string {
  return (
    `HTTP/1.1 ${status} ${STATUS_TEXT[status]}\r\n` +
    `content-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n` +
    (keepAlive ? `\r\n${body}` : `connection: close\r\n\r\n${body}`)
  );
}

/** Headers that describe one hop, never forwarded (RFC 9110 §7.6.1), plus ones the proxy sets itself. */
export const HOP_BY_HOP = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "proxy-authenticate",
  "proxy-authorization",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
  "expect",
  "http2-settings",
]);
