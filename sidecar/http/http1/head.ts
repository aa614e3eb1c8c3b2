import { HOP_BY_HOP } from "../hop-by-hop.ts";

/**
 * Strict HTTP/1.x message heads (RFC 9112): the request line or status line and the header fields,
 * parsed from the bytes before the empty line. Anything a lenient parser would have to guess at is
 * refused: line endings other than CRLF, control characters (NUL included) anywhere in the head,
 * obs-fold, whitespace before a colon, invalid method, target, version or header-name characters,
 * and framing headers that two parsers could read differently (repeated or malformed
 * Content-Length, Content-Length together with Transfer-Encoding, any transfer coding other than a
 * single "chunked", a repeated Host).
 */

export class HeadError extends Error {
  constructor(readonly reason: string) {
    super(reason);
    this.name = "HeadError";
  }
}

/** Header names and values as received, in order: [name0, value0, name1, value1, ...]. */
export type RawHeaders = string[];

interface Fields {
  readonly raw: RawHeaders;
  /**
   * Lower-cased names; repeated fields joined with ", " (Set-Cookie kept as a list). For a request,
   * only the fields forwarded to the next hop.
   */
  readonly byName: Record<string, string | string[]>;
  readonly contentLength: number | null;
  readonly chunked: boolean;
  /** Lower-cased tokens of the Connection header(s). */
  readonly connection: ReadonlySet<string>;
  /** How many Host fields there were. */
  readonly hosts: number;
}

export interface RequestHead extends Fields {
  readonly method: string;
  readonly target: string;
  /** 0 for HTTP/1.0, 1 for HTTP/1.1. */
  readonly minor: 0 | 1;
  readonly host: string | undefined;
  /** Connection: upgrade with an Upgrade header: the connection becomes a tunnel if accepted. */
  readonly upgrade: boolean;
  /**
   * The upgrade offers HTTP again (h2c): it is never switched to. The request goes on as a plain
   * one, without its Upgrade, HTTP2-Settings and Connection fields, and the connection ends with it
   * as after any declined upgrade.
   */
  readonly httpUpgrade: boolean;
  readonly expectContinue: boolean;
  /** Whether the client lets the connection stay open after this exchange. */
  readonly keepAlive: boolean;
}

export interface ResponseHead extends Fields {
  readonly minor: 0 | 1;
  readonly status: number;
  readonly reason: string;
  /** Whether the server lets its connection be reused after this response. */
  readonly keepAlive: boolean;
}

/** The end of a head in `buf` from `from`: the offset just past CRLF CRLF, or -1. */
export function headEnd(buf: Buffer, from: number): number {
  const i = buf.indexOf("\r\n\r\n", from, "latin1");
  return i < 0 ? -1 : i + 4;
}

/** Controls other than HTAB, CR and LF, and DEL, are never valid in a head. */
function hasForbiddenChar(text: string): boolean {
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if ((c < 0x20 && c !== 0x09 && c !== 0x0a && c !== 0x0d) || c === 0x7f) return true;
  }
  return false;
}
// CR must start CRLF and LF must end it.
const LONE_CR_OR_LF = /\r(?!\n)|(?<!\r)\n/;
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const REQUEST_LINE = /^([A-Z][A-Z0-9_-]{0,31}) ([\x21-\x7e]+) HTTP\/1\.([01])$/;
const STATUS_LINE = /^HTTP\/1\.([01]) ([1-9]\d\d)(?: ([^\r\n]*))?$/;
const DIGITS = /^\d{1,15}$/;
/** Origin-form, asterisk-form or absolute-form (RFC 9112 §3.2); authority-form is CONNECT's alone. */
const TARGET_FORM = /^(?:\/|\*$|[A-Za-z]+:\/\/)/;
/** An absolute-form target's authority: userinfo, reg-name or IP literal, port (RFC 3986 §3.2). */
const ABSOLUTE_AUTHORITY = /^[A-Za-z]+:\/\/(?:[A-Za-z0-9\-._~!$&'()*+,;=:%@]|\[[0-9A-Fa-f:.]+\])*(?:[/?#]|$)/;

/**
 * Why an incomplete head can already be refused (a bare CR or LF, a control character), or null:
 * so that a client cannot hold a connection with a head that could never be accepted.
 */
export function partialHeadProblem(text: string): string | null {
  const body = text.endsWith("\r") ? text.slice(0, -1) : text;
  if (hasForbiddenChar(body)) return "control character in the message head";
  if (LONE_CR_OR_LF.test(body)) return "line ending other than CRLF in the message head";
  return null;
}

const NO_TOKENS: ReadonlySet<string> = new Set();

/**
 * Upgrade protocols that carry HTTP again (RFC 7540's h2c, "HTTP/2.0" and the like, and RFC 2817's
 * TLS/1.0 with HTTP inside): after the switch every request would reach the application through a
 * byte tunnel, never decided on its own and with whatever fields the client wrote,
 * x-forwarded-client-cert included.
 */
const HTTP_UPGRADES = new Set(["h2c", "h2", "http", "tls"]);

/** Whether an Upgrade field value offers a protocol in `HTTP_UPGRADES` (name before any "/"). */
function offersHttpUpgrade(value: string): boolean {
  for (const item of value.split(",")) {
    const protocol = trimOws(item, 0);
    const slash = protocol.indexOf("/");
    if (HTTP_UPGRADES.has((slash < 0 ? protocol : protocol.slice(0, slash)).toLowerCase())) return true;
  }
  return false;
}

/**
 * `line` from `start` without leading and trailing SP and HTAB (RFC 9110 OWS) and nothing else:
 * String.prototype.trim would also take NBSP (0xA0), which a next hop keeps as part of the value.
 */
function trimOws(line: string, start: number): string {
  let end = line.length;
  while (start < end && (line.charCodeAt(start) === 0x20 || line.charCodeAt(start) === 0x09)) start++;
  while (end > start && (line.charCodeAt(end - 1) === 0x20 || line.charCodeAt(end - 1) === 0x09)) end--;
  return line.slice(start, end);
}

/** Adds the options of a Connection field (RFC 9110 §7.6.1: a list of tokens) to `into`. */
function addTokens(into: Set<string>, value: string): void {
  if (!value.includes(",")) {
    addToken(into, value);
    return;
  }
  for (const t of value.split(",")) addToken(into, trimOws(t, 0));
}

function addToken(into: Set<string>, token: string): void {
  if (token === "") return;
  if (!TOKEN.test(token)) throw new HeadError(`invalid Connection option "${token.slice(0, 40)}"`);
  into.add(token.toLowerCase());
}

/**
 * Fields a proxy must not drop, which it would if they were named in Connection: the next hop
 * would frame the message, or route the request, otherwise than this one decided.
 */
const FRAMING_AND_ROUTING = ["content-length", "transfer-encoding", "host"];

function checkConnectionOptions(connection: ReadonlySet<string>): void {
  for (const name of FRAMING_AND_ROUTING)
    if (connection.has(name)) throw new HeadError(`Connection names the ${name} field`);
}

/**
 * Field values by lower-cased name, repeats joined with ", " and Set-Cookie kept as a list; names
 * in `dropped` left out.
 */
function fieldsByName(raw: RawHeaders, dropped?: ReadonlySet<string>): Record<string, string | string[]> {
  const byName: Record<string, string | string[]> = {};
  for (let i = 0; i < raw.length; i += 2) {
    const lower = (raw[i] as string).toLowerCase();
    if (dropped !== undefined && (dropped.has(lower) || HOP_BY_HOP.has(lower))) continue;
    const value = raw[i + 1] as string;
    const seen = byName[lower];
    if (seen === undefined) byName[lower] = lower === "set-cookie" ? [value] : value;
    else if (Array.isArray(seen)) seen.push(value);
    else byName[lower] = `${seen}, ${value}`;
  }
  return byName;
}

/** One pass over the field lines: the raw list, and the fields framing and routing depend on. */
class FieldScan {
  readonly raw: RawHeaders = [];
  contentLength: number | null = null;
  chunked = false;
  hosts = 0;
  host: string | undefined = undefined;
  connection: Set<string> | null = null;
  expect: string | undefined = undefined;
  upgradeField = false;
  httpUpgrade = false;

  constructor(lines: string[]) {
    let transferEncodings = 0;
    for (let i = 1; i < lines.length; i++) {
      const line = lines[i] as string;
      const colon = line.indexOf(":");
      if (colon <= 0) {
        throw new HeadError(
          line.startsWith(" ") || line.startsWith("\t")
            ? "obsolete line folding in a header field"
            : `header line without a field name: "${line.slice(0, 40)}"`,
        );
      }
      const name = line.slice(0, colon);
      if (!TOKEN.test(name)) throw new HeadError(`invalid header field name "${name.slice(0, 40)}"`);
      const value = trimOws(line, colon + 1);
      this.raw.push(name, value);
      // Only the names below matter here; most fields are skipped by their length alone.
      switch (name.length) {
        case 4:
          if (name.toLowerCase() === "host") {
            this.hosts++;
            this.host = value;
          }
          break;
        case 6:
          if (name.toLowerCase() === "expect") this.expect = value;
          break;
        case 7:
          if (name.toLowerCase() === "upgrade") {
            this.upgradeField = true;
            if (offersHttpUpgrade(value)) this.httpUpgrade = true;
          }
          break;
        case 10:
          if (name.toLowerCase() === "connection") addTokens((this.connection ??= new Set()), value);
          break;
        case 14:
          if (name.toLowerCase() === "content-length") {
            if (this.contentLength !== null) throw new HeadError("more than one Content-Length header");
            if (!DIGITS.test(value)) throw new HeadError(`invalid Content-Length "${value.slice(0, 40)}"`);
            this.contentLength = Number(value);
          }
          break;
        case 17:
          if (name.toLowerCase() === "transfer-encoding") {
            if (++transferEncodings > 1) throw new HeadError("more than one Transfer-Encoding header");
            if (value.toLowerCase() !== "chunked")
              throw new HeadError(`unsupported Transfer-Encoding "${value.slice(0, 40)}"`);
            this.chunked = true;
          }
          break;
      }
    }
    if (this.contentLength !== null && this.chunked)
      throw new HeadError("both Content-Length and Transfer-Encoding");
    if (this.connection !== null) checkConnectionOptions(this.connection);
  }
}

/**
 * The lines of a complete head (`text` ends with CRLF CRLF), checked in the same pass: every CR is
 * followed by LF, every LF follows a CR, and no other control character appears.
 */
function splitHead(text: string): string[] {
  const lines: string[] = [];
  const end = text.length - 2;
  let lineStart = 0;
  for (let i = 0; i < end; i++) {
    const c = text.charCodeAt(i);
    if (c >= 0x20) {
      if (c === 0x7f) throw new HeadError("control character in the message head");
      continue;
    }
    if (c === 0x0d) {
      if (text.charCodeAt(i + 1) !== 0x0a)
        throw new HeadError("line ending other than CRLF in the message head");
      lines.push(text.slice(lineStart, i));
      lineStart = ++i + 1;
    } else if (c === 0x0a) {
      throw new HeadError("line ending other than CRLF in the message head");
    } else if (c !== 0x09) {
      throw new HeadError("control character in the message head");
    }
  }
  return lines;
}

/**
 * The fields both kinds of head share. Heads are class instances, not object literals with a getter:
 * V8 gives such a literal a slow dictionary-mode shape, which every later property read then pays.
 */
abstract class ParsedHead implements Fields {
  readonly raw: RawHeaders;
  readonly contentLength: number | null;
  readonly chunked: boolean;
  readonly connection: ReadonlySet<string>;
  readonly hosts: number;
  readonly minor: 0 | 1;
  readonly keepAlive: boolean;
  private fieldMap: Record<string, string | string[]> | undefined = undefined;

  constructor(f: FieldScan, minor: 0 | 1) {
    this.raw = f.raw;
    this.contentLength = f.contentLength;
    this.chunked = f.chunked;
    this.connection = f.connection ?? NO_TOKENS;
    this.hosts = f.hosts;
    this.minor = minor;
    this.keepAlive = minor === 1 ? !this.connection.has("close") : this.connection.has("keep-alive");
  }

  /** Built on first use: only requests are decided on their header values. */
  get byName(): Record<string, string | string[]> {
    return (this.fieldMap ??= this.buildByName());
  }

  protected abstract buildByName(): Record<string, string | string[]>;
}

class ParsedRequestHead extends ParsedHead implements RequestHead {
  readonly method: string;
  readonly target: string;
  readonly host: string | undefined;
  readonly upgrade: boolean;
  readonly httpUpgrade: boolean;
  readonly expectContinue: boolean;

  constructor(f: FieldScan, minor: 0 | 1, method: string, target: string) {
    super(f, minor);
    this.method = method;
    this.target = target;
    this.host = f.host;
    this.upgrade = f.upgradeField && this.connection.has("upgrade");
    this.httpUpgrade = this.upgrade && f.httpUpgrade;
    this.expectContinue = f.expect !== undefined && f.expect.toLowerCase() === "100-continue";
  }

  // Policy decides on the fields the next hop receives: a hop-by-hop field, or one named in
  // Connection, is not passed on (except by an upgrade that can switch, which passes on every
  // field), so a rule cannot be met by it.
  protected buildByName(): Record<string, string | string[]> {
    return fieldsByName(this.raw, this.upgrade && !this.httpUpgrade ? undefined : this.connection);
  }
}

class ParsedResponseHead extends ParsedHead implements ResponseHead {
  readonly status: number;
  readonly reason: string;

  constructor(f: FieldScan, minor: 0 | 1, status: number, reason: string) {
    super(f, minor);
    this.status = status;
    this.reason = reason;
  }

  protected buildByName(): Record<string, string | string[]> {
    return fieldsByName(this.raw);
  }
}

/** Parses a request head: `text` is the latin1 reading of the bytes up to and including CRLF CRLF. */
export function parseRequestHead(text: string): RequestHead {
  const lines = splitHead(text);
  const m = REQUEST_LINE.exec(lines[0] as string);
  if (!m) throw new HeadError(`malformed request line "${(lines[0] as string).slice(0, 80)}"`);
  // llhttp refuses any other target, so a next hop would not read the request Sigil decided on.
  if (m[1] !== "CONNECT" && !TARGET_FORM.test(m[2] as string))
    throw new HeadError(`request target "${(m[2] as string).slice(0, 80)}" is not /path, * or scheme://`);
  if (/^[A-Za-z]+:\/\//.test(m[2] as string) && !ABSOLUTE_AUTHORITY.test(m[2] as string))
    throw new HeadError(`request target "${(m[2] as string).slice(0, 80)}" has an invalid authority`);
  const f = new FieldScan(lines);
  const minor = m[3] === "1" ? 1 : 0;
  if (f.hosts > 1) throw new HeadError("more than one Host header");
  if (minor === 1 && f.host === undefined) throw new HeadError("HTTP/1.1 request without a Host header");
  if (minor === 0 && f.chunked) throw new HeadError("Transfer-Encoding in an HTTP/1.0 request");
  return new ParsedRequestHead(f, minor, m[1] as string, m[2] as string);
}

/** Parses a response head (same input convention as `parseRequestHead`). */
export function parseResponseHead(text: string): ResponseHead {
  const lines = splitHead(text);
  const m = STATUS_LINE.exec(lines[0] as string);
  if (!m) throw new HeadError(`malformed status line "${(lines[0] as string).slice(0, 80)}"`);
  const f = new FieldScan(lines);
  return new ParsedResponseHead(f, m[1] === "1" ? 1 : 0, Number(m[2]), m[3] ?? "");
}

/** What `scanRequestHead` found at the front of a connection's unread bytes. */
export type RequestHeadScan =
  | {
      readonly kind: "partial";
      /** Where to resume looking for the end once more bytes came. */ readonly scanFrom: number;
    }
  | { readonly kind: "refused"; readonly reason: string }
  | {
      readonly kind: "head";
      readonly head: RequestHead;
      /** Offset just past the head. */ readonly end: number;
    };

/**
 * Looks for a complete request head at the front of `buf`, resuming at `scanFrom`. A head longer
 * than `maxBytes` (not counting its final CRLF CRLF, which may still be on its way), or one that
 * could never be accepted, is refused without waiting for the rest.
 */
export function scanRequestHead(buf: Buffer, scanFrom: number, maxBytes: number): RequestHeadScan {
  const end = headEnd(buf, scanFrom);
  if (end < 0) {
    if (buf.length >= maxBytes + 4)
      return { kind: "refused", reason: `request head larger than ${maxBytes} bytes` };
    const problem = partialHeadProblem(buf.toString("latin1"));
    if (problem !== null) return { kind: "refused", reason: problem };
    return { kind: "partial", scanFrom: Math.max(0, buf.length - 3) };
  }
  if (end > maxBytes + 4) return { kind: "refused", reason: `request head larger than ${maxBytes} bytes` };
  try {
    return { kind: "head", head: parseRequestHead(buf.toString("latin1", 0, end)), end };
  } catch (err) {
    if (!(err instanceof HeadError)) throw err;
    return { kind: "refused", reason: err.reason };
  }
}
