import { FORWARDED_CLIENT_CERT, isSidecarFieldName } from "../client-cert.ts";
import { HOP_BY_HOP } from "../hop-by-hop.ts";
import type { RawHeaders, RequestHead, ResponseHead } from "./head.ts";

/** Serializes the heads the proxy sends on: hop-by-hop fields dropped, its own framing fields added. */

/**
 * The fields passed on. A request also loses every XFCC field the client sent (any case, `_` for
 * `-`, every occurrence): only the sidecar's own reaches the next hop.
 */
function endToEnd(raw: RawHeaders, connection: ReadonlySet<string>, request: boolean): string {
  let out = "";
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i] as string;
    const lower = name.toLowerCase();
    if (HOP_BY_HOP.has(lower) || connection.has(lower)) continue;
    if (request && isSidecarFieldName(lower)) continue;
    out += `${name}: ${raw[i + 1] as string}\r\n`;
  }
  return out;
}

/** The sidecar's own fields: XFCC, and the verified user's (`user-access/user-fields.ts`). */
function sidecarFields(
  clientCert: string | undefined,
  user: Readonly<Record<string, string>> | undefined,
): string {
  let out = clientCert === undefined ? "" : `${FORWARDED_CLIENT_CERT}: ${clientCert}\r\n`;
  if (user !== undefined) for (const [name, value] of Object.entries(user)) out += `${name}: ${value}\r\n`;
  return out;
}

/**
 * The request head sent upstream: always HTTP/1.1, with the normalized target, and `clientCert`
 * (when given) as the only XFCC field.
 */
export function upstreamRequestHead(
  req: RequestHead,
  target: string,
  clientCert?: string,
  user?: Readonly<Record<string, string>>,
): string {
  return (
    `${req.method} ${target} HTTP/1.1\r\n${endToEnd(req.raw, req.connection, true)}` +
    sidecarFields(clientCert, user) +
    (req.chunked ? "transfer-encoding: chunked\r\n\r\n" : "\r\n")
  );
}

/** A Connection value without options naming the sidecar's fields, or "" when nothing else was in it. */
function withoutClientCertOption(value: string): string {
  return value
    .split(",")
    .map((t) => t.trim())
    .filter((t) => t !== "" && !isSidecarFieldName(t.toLowerCase()))
    .join(", ");
}

/**
 * An upgrade request is passed on with all its fields (Connection and Upgrade included) except the
 * client's XFCC; a Connection field naming XFCC loses that option, so the next hop does not drop
 * the sidecar's own field as hop-by-hop.
 */
export function upgradeRequestHead(
  req: RequestHead,
  target: string,
  clientCert?: string,
  user?: Readonly<Record<string, string>>,
): string {
  const namesClientCert = [...req.connection].some(isSidecarFieldName);
  let out = `${req.method} ${target} HTTP/1.1\r\n`;
  for (let i = 0; i < req.raw.length; i += 2) {
    const name = req.raw[i] as string;
    const lower = name.toLowerCase();
    if (isSidecarFieldName(lower)) continue;
    let value = req.raw[i + 1] as string;
    if (namesClientCert && lower === "connection") {
      value = withoutClientCertOption(value);
      if (value === "") continue;
    }
    out += `${name}: ${value}\r\n`;
  }
  return `${out}${sidecarFields(clientCert, user)}\r\n`;
}

/**
 * How a response ends its head: `connection: close`, or (`keepAliveMs` given) how long the
 * connection stays open while idle, as `Keep-Alive: timeout` (RFC 9112 Appendix C.2.2). A client
 * that reads it (another sidecar's pool, undici) gives up the idle connection before this side
 * closes it, instead of sending a request into the close; the mesh hop has a sidecar on both ends.
 */
function connectionFields(keepAliveMs: number | null): string {
  return keepAliveMs === null
    ? "connection: close\r\n\r\n"
    : `keep-alive: timeout=${Math.floor(keepAliveMs / 1000)}\r\n\r\n`;
}

/**
 * The response head sent to the client; `chunked` says whether the body goes on chunk-framed, and
 * `keepAliveMs` how long the connection is kept idle after it (null: closed after the response).
 */
export function downstreamResponseHead(
  res: ResponseHead,
  chunked: boolean,
  keepAliveMs: number | null,
): string {
  return (
    `HTTP/1.1 ${res.status} ${res.reason}\r\n${endToEnd(res.raw, res.connection, false)}` +
    (chunked ? "transfer-encoding: chunked\r\n" : "") +
    connectionFields(keepAliveMs)
  );
}

const STATUS_TEXT: Record<400 | 403 | 408 | 502, string> = {
  400: "Bad Request",
  403: "Forbidden",
  408: "Request Timeout",
  502: "Bad Gateway",
};

/** A complete HTTP/1.1 response with a JSON body, closing the connection unless `keepAliveMs` is given. */
export function rawResponse(
  status: 400 | 403 | 408 | 502,
  body: string,
  keepAliveMs: number | null = null,
): string {
  return (
    `HTTP/1.1 ${status} ${STATUS_TEXT[status]}\r\n` +
    `content-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n` +
    connectionFields(keepAliveMs) +
    body
  );
}
