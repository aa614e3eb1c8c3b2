import type { Socket } from "node:net";
import { ioDeadline } from "../../core/io-deadline.ts";
import type { ClientHelloInfo } from "../tls/client-hello.ts";
import { looksLikeTls, parseClientHello } from "../tls/client-hello.ts";

/**
 * Protocol detection on a freshly accepted connection. It reads (never writes) until the first bytes
 * identify TLS, HTTP/2 prior knowledge, or HTTP/1.x, and gives up after a bounded time or byte count
 * so that server-speaks-first protocols (SMTP, MySQL, ...) are carried as opaque TCP instead of
 * hanging. The socket is handed back paused with the bytes read so far.
 */

export type DetectedProtocol =
  | { readonly kind: "tls"; readonly hello: ClientHelloInfo }
  | { readonly kind: "http1" }
  | { readonly kind: "h2" }
  | { readonly kind: "tcp"; readonly reason: "timeout" | "unrecognised" | "closed" };

export interface Detection {
  readonly protocol: DetectedProtocol;
  /** Everything read during detection; the caller must deliver it before any later byte. */
  readonly head: Buffer;
}

const H2_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1");
/** `token SP target SP HTTP/1.x` with tchar from RFC 9110 */
const REQUEST_LINE = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+ [^ \r\n]+ HTTP\/1\.[01]\r?$/;
/** What a request line can start with; a read may end between its CR and its LF. */
const REQUEST_LINE_PREFIX =
  /^[!#$%&'*+.^_`|~0-9A-Za-z-]*( [^ \r\n]*( (H(T(T(P(\/(1(\.([01]\r?)?)?)?)?)?)?)?)?)?)?$/;
/** A request line longer than this is still handed to the HTTP parser, which rejects it. */
const MAX_REQUEST_LINE = 8192;
const MAX_HELLO = 16384 + 5;

type Verdict = DetectedProtocol | "more";

export function classify(buf: Buffer): Verdict {
  if (buf.length === 0) return "more";
  if (looksLikeTls(buf)) {
    const parsed = parseClientHello(buf);
    if (parsed.state === "complete") return { kind: "tls", hello: parsed.hello };
    if (parsed.state === "incomplete" && buf.length < MAX_HELLO) return "more";
    return parsed.state === "invalid"
      ? { kind: "tcp", reason: "unrecognised" }
      : { kind: "tls", hello: { alpn: [] } };
  }
  const prefaceBytes = Math.min(buf.length, H2_PREFACE.length);
  if (buf.subarray(0, prefaceBytes).equals(H2_PREFACE.subarray(0, prefaceBytes))) {
    if (buf.length >= H2_PREFACE.length) return { kind: "h2" };
    return "more";
  }
  const lineEnd = buf.indexOf(0x0a);
  const line = buf
    .subarray(0, lineEnd === -1 ? Math.min(buf.length, MAX_REQUEST_LINE) : lineEnd)
    .toString("latin1");
  if (lineEnd !== -1)
    return REQUEST_LINE.test(line) ? { kind: "http1" } : { kind: "tcp", reason: "unrecognised" };
  if (!REQUEST_LINE_PREFIX.test(line)) {
    // A long request line that still reads like one goes to the strict parser (which answers 400).
    return /^[!#$%&'*+.^_`|~0-9A-Za-z-]+ [^ \r\n]+/.test(line) && buf.length >= MAX_REQUEST_LINE
      ? { kind: "http1" }
      : { kind: "tcp", reason: "unrecognised" };
  }
  return buf.length >= MAX_REQUEST_LINE ? { kind: "http1" } : "more";
}

/**
 * Reads from `socket` until the protocol is known or `timeoutMs` passes. Resolves with the socket
 * paused; never rejects (a socket error or early close is reported as opaque TCP with what was read).
 */
export function detectProtocol(socket: Socket, timeoutMs: number): Promise<Detection> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let total = 0;
    const finish = (protocol: DetectedProtocol): void => {
      deadline.cancel();
      socket.removeListener("data", onData);
      socket.removeListener("end", onEnd);
      socket.removeListener("error", onEnd);
      socket.pause();
      resolve({ protocol, head: chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, total) });
    };
    const onData = (chunk: Buffer): void => {
      chunks.push(chunk);
      total += chunk.length;
      const verdict = classify(chunks.length === 1 ? chunk : Buffer.concat(chunks, total));
      if (verdict !== "more") finish(verdict);
    };
    const onEnd = (): void => finish({ kind: "tcp", reason: "closed" });
    const deadline = ioDeadline(timeoutMs, () => finish({ kind: "tcp", reason: "timeout" }));
    socket.on("data", onData);
    socket.once("end", onEnd);
    socket.once("error", onEnd);
    socket.resume();
  });
}

/** Collects bytes that arrived in the socket's buffer after detection paused it. */
export function takeBuffered(socket: Socket, head: Buffer): Buffer {
  const more: Buffer[] = [];
  let chunk: Buffer | null;
  while ((chunk = socket.read() as Buffer | null) !== null) more.push(chunk);
  return more.length === 0 ? head : Buffer.concat([head, ...more]);
}
