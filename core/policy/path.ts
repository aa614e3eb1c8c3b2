/**
 * Request-target normalization: turns what a client sent into the one path that policy is matched
 * against, or rejects it. Every step closes a way of making a proxy and an application disagree about
 * which resource a request names.
 */

export type NormalizedPath =
  | {
      readonly ok: true;
      /** Decoded, slash-merged, dot-segment-free path: what policy matches. */
      readonly path: string;
      /** The same with `;params` stripped from every segment; only present when it differs from `path`. */
      readonly withoutParams?: string;
      /** The authority of an absolute-form target (`http://authority/path`), which servers route by. */
      readonly authority?: string;
      /** The raw query including its leading `?`, or "" when there is none. */
      readonly query: string;
      /** `path` re-encoded plus `query`: the origin-form target to forward so the application sees `path`. */
      readonly forwardTarget: string;
    }
  | { readonly ok: false; readonly reason: string };

const ABSOLUTE_FORM = /^([A-Za-z][A-Za-z0-9+.-]*):\/\//;

/** Builds the success value without object spread, which is costly on this per-request path. */
function accepted(
  path: string,
  withoutParams: string | undefined,
  authority: string | undefined,
  query: string,
  forwardTarget: string,
): NormalizedPath {
  const result: {
    ok: true;
    path: string;
    query: string;
    forwardTarget: string;
    withoutParams?: string;
    authority?: string;
  } = { ok: true, path, query, forwardTarget };
  if (withoutParams !== undefined) result.withoutParams = withoutParams;
  if (authority !== undefined) result.authority = authority;
  return result;
}

function reject(reason: string): NormalizedPath {
  return { ok: false, reason };
}

function hexValue(code: number): number {
  if (code >= 0x30 && code <= 0x39) return code - 0x30;
  const lower = code | 0x20;
  if (lower >= 0x61 && lower <= 0x66) return lower - 0x61 + 10;
  return -1;
}

/** One pass of percent-decoding with the rejections the policy language requires; a string is an error. */
function percentDecode(raw: string): { value: string } | string {
  if (!raw.includes("%")) return { value: raw };
  for (let i = raw.indexOf("%"); i >= 0; i = raw.indexOf("%", i + 1)) {
    const hi = hexValue(raw.charCodeAt(i + 1));
    const lo = hexValue(raw.charCodeAt(i + 2));
    if (hi < 0 || lo < 0) return `invalid percent-encoding at offset ${i}`;
    const b = hi * 16 + lo;
    if (b === 0) return "encoded NUL (%00) in path";
    if (b === 0x2f) return "encoded slash (%2F) in path";
    if (b === 0x5c) return "encoded backslash (%5C) in path";
    if (b < 0x20 || b === 0x7f) return `encoded control character (%${raw.slice(i + 1, i + 3)}) in path`;
    i += 2;
  }
  // Every escape is now well-formed and none is a separator; what remains is UTF-8 validity, which
  // decodeURIComponent enforces (overlong forms and encoded surrogates included).
  try {
    return { value: decodeURIComponent(raw) };
  } catch {
    return "percent-encoded bytes are not valid UTF-8";
  }
}

/** Slash merging and RFC 3986 §5.2.4 dot-segment removal over already-split segments. */
function joinSegments(segments: readonly string[]): string {
  const out: string[] = [];
  let trailingSlash = false;
  for (let i = 0; i < segments.length; i++) {
    const seg = segments[i] as string;
    const last = i === segments.length - 1;
    if (seg === "" || seg === ".") {
      if (last) trailingSlash = true;
    } else if (seg === "..") {
      out.pop();
      if (last) trailingSlash = true;
    } else {
      out.push(seg);
      trailingSlash = false;
    }
  }
  if (out.length === 0) return "/";
  return "/" + out.join("/") + (trailingSlash ? "/" : "");
}

function stripParams(segment: string): string {
  const semi = segment.indexOf(";");
  return semi >= 0 ? segment.slice(0, semi) : segment;
}

function encodePath(path: string): string {
  const encoded = encodeURI(path);
  return /[?#]/.test(encoded) ? encoded.replaceAll("?", "%3F").replaceAll("#", "%23") : encoded;
}

/** Normalizes a raw HTTP request-target (see README "Request paths"). Never throws. */
export function normalizeRequestPath(rawTarget: string): NormalizedPath {
  if (rawTarget === "*") return { ok: true, path: "*", query: "", forwardTarget: "*" };
  for (let i = 0; i < rawTarget.length; i++) {
    const c = rawTarget.charCodeAt(i);
    if (c <= 0x20 || c >= 0x7f) return reject(`control, space or non-ASCII character at offset ${i}`);
    if (c === 0x5c) return reject(`backslash at offset ${i}`);
  }
  let rest = rawTarget;
  let authority: string | undefined;
  const absolute = ABSOLUTE_FORM.exec(rawTarget);
  if (absolute) {
    const scheme = (absolute[1] ?? "").toLowerCase();
    if (scheme !== "http" && scheme !== "https")
      return reject(`unsupported scheme "${scheme}" in request target`);
    const after = rawTarget.slice(absolute[0].length);
    const end = after.search(/[/?#]/);
    authority = end < 0 ? after : after.slice(0, end);
    if (authority === "") return reject("absolute-form request target without an authority");
    rest = end < 0 ? "/" : after.slice(end);
    if (!rest.startsWith("/")) rest = "/" + rest;
  } else if (!rawTarget.startsWith("/")) {
    return reject("request target is neither origin-form (/path) nor absolute-form (http://host/path)");
  }
  // `//x/y` is origin-form to HTTP but a network-path reference (host x) to URL parsers such as
  // `new URL(req.url, base)`: the two would disagree about the path, so refuse it.
  if (rest.startsWith("//")) return reject("request path starts with //");
  const hash = rest.indexOf("#");
  const withoutFragment = hash >= 0 ? rest.slice(0, hash) : rest;
  const q = withoutFragment.indexOf("?");
  const rawPath = q >= 0 ? withoutFragment.slice(0, q) : withoutFragment;
  const query = q >= 0 ? withoutFragment.slice(q) : "";
  // Common case: nothing to decode, merge, resolve or strip; the raw path is already the answer.
  if (!/%|\/\.|\/\/|;/.test(rawPath)) return accepted(rawPath, undefined, authority, query, rawPath + query);
  const decoded = percentDecode(rawPath);
  if (typeof decoded === "string") return reject(decoded);
  const segments = decoded.value.slice(1).split("/");
  const path = joinSegments(segments);
  const forwardTarget = encodePath(path) + query;
  const withoutParams = decoded.value.includes(";") ? joinSegments(segments.map(stripParams)) : path;
  return accepted(path, withoutParams === path ? undefined : withoutParams, authority, query, forwardTarget);
}
