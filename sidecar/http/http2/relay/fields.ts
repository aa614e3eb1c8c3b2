import type { IncomingHttpHeaders } from "node:http2";

/**
 * What makes a header block malformed (RFC 9113 §8.2, §8.3), and the header object policy reads,
 * built the way node:http2 builds it so the relay and the session-based proxy decide alike.
 */

/** Fields that describe one HTTP/1.1 connection: in HTTP/2 they make a message malformed (§8.2.2). */
const CONNECTION_SPECIFIC = new Set([
  "connection",
  "proxy-connection",
  "keep-alive",
  "transfer-encoding",
  "upgrade",
]);

const REQUEST_PSEUDO = new Set([":method", ":scheme", ":authority", ":path"]);

/** Names node:http2 keeps the first value of (its `kSingleValueHeaders`): later copies are dropped. */
const SINGLE_VALUE = new Set([
  ":status",
  ":method",
  ":authority",
  ":scheme",
  ":path",
  ":protocol",
  "access-control-allow-credentials",
  "access-control-max-age",
  "access-control-request-method",
  "age",
  "authorization",
  "content-encoding",
  "content-language",
  "content-length",
  "content-location",
  "content-md5",
  "content-range",
  "content-type",
  "date",
  "dnt",
  "etag",
  "expires",
  "from",
  "host",
  "if-match",
  "if-modified-since",
  "if-none-match",
  "if-range",
  "if-unmodified-since",
  "last-modified",
  "location",
  "max-forwards",
  "proxy-authorization",
  "range",
  "referer",
  "retry-after",
  "tk",
  "upgrade-insecure-requests",
  "user-agent",
  "x-content-type-options",
]);

/** A name: lower-case token characters, a leading `:` only for a pseudo-header. */
const NAME = /^:?[a-z0-9!#$%&'*+\-.^_`|~]+$/;
/** A value: no NUL, CR or LF anywhere, no space or tab at either end (§8.2.1). */
const BAD_VALUE = /[\0\r\n]|^[ \t]|[ \t]$/;

/** Why a block is malformed, or undefined: what the stream is reset for (PROTOCOL_ERROR, §8.1.1). */
export type Malformed = string;

function fieldProblem(name: string, value: string): Malformed | undefined {
  if (!NAME.test(name)) return `field name ${JSON.stringify(name)} is not a lower-case token`;
  if (BAD_VALUE.test(value)) return `field ${name} has a value with CR, LF, NUL or surrounding whitespace`;
  if (CONNECTION_SPECIFIC.has(name)) return `connection-specific field ${name}`;
  if (name === "te" && value !== "trailers")
    return `te: ${JSON.stringify(value)} (only "trailers" is allowed)`;
  return undefined;
}

/** Checks a request's header block: pseudo-headers first, each once, the ones a request needs. */
export function requestProblem(fields: readonly string[]): Malformed | undefined {
  const seen = new Set<string>();
  let regular = false;
  for (let i = 0; i < fields.length; i += 2) {
    const name = fields[i] as string;
    const value = fields[i + 1] as string;
    const problem = fieldProblem(name, value);
    if (problem) return problem;
    if (name.startsWith(":")) {
      if (regular) return `pseudo-header ${name} after a regular field`;
      if (!REQUEST_PSEUDO.has(name)) return `pseudo-header ${name} in a request`;
      if (seen.has(name)) return `pseudo-header ${name} twice`;
      seen.add(name);
      if (name === ":path" && value === "") return "empty :path";
    } else regular = true;
  }
  if (!seen.has(":method")) return "no :method";
  if (!seen.has(":scheme") || !seen.has(":path")) return "no :scheme or :path (CONNECT is not relayed)";
  return undefined;
}

/** Checks a response's header block: `:status` first and alone among pseudo-headers. */
export function responseProblem(fields: readonly string[]): Malformed | undefined {
  return headerBlockProblem(fields, false);
}

/** Checks trailers, either direction's: regular fields only. */
export function trailersProblem(fields: readonly string[]): Malformed | undefined {
  return headerBlockProblem(fields, true);
}

function headerBlockProblem(fields: readonly string[], trailers: boolean): Malformed | undefined {
  let status = false;
  for (let i = 0; i < fields.length; i += 2) {
    const name = fields[i] as string;
    const value = fields[i + 1] as string;
    const problem = fieldProblem(name, value);
    if (problem) return problem;
    if (!name.startsWith(":")) continue;
    if (trailers) return `pseudo-header ${name} in trailers`;
    if (name !== ":status" || status || i !== 0) return `pseudo-header ${name} out of place`;
    if (!/^[1-9]\d\d$/.test(value)) return `:status ${JSON.stringify(value)}`;
    status = true;
  }
  if (!trailers && !status) return "no :status";
  return undefined;
}

/** The header object of a decoded block, as node:http2 builds it (`toHeaderObject`). */
export function headerObject(fields: readonly string[]): IncomingHttpHeaders {
  const out: Record<string, string | string[]> = {};
  for (let i = 0; i < fields.length; i += 2) {
    const name = fields[i] as string;
    const value = fields[i + 1] as string;
    const existing = out[name];
    if (existing === undefined) out[name] = name === "set-cookie" ? [value] : value;
    else if (SINGLE_VALUE.has(name)) continue;
    else if (name === "cookie") out[name] = `${existing as string}; ${value}`;
    else if (Array.isArray(existing)) existing.push(value);
    else out[name] = `${existing}, ${value}`;
  }
  return out as IncomingHttpHeaders;
}

/** Appends a header object's fields to `out` as names and values, an array's values one field each. */
export function appendFields(
  headers: Readonly<Record<string, string | readonly string[] | undefined>>,
  out: string[],
): void {
  for (const name in headers) {
    const value = headers[name];
    if (value === undefined) continue;
    if (typeof value === "string") out.push(name, value);
    else for (const v of value) out.push(name, v);
  }
}
