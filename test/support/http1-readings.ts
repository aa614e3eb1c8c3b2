/**
 * Two readings of one HTTP/1.1 client byte stream, for the differential suite and the HTTP/1.1
 * framing fuzzer: Sigil's (the sidecar connection's steps: head limit, early refusal of a partial
 * head, body framer, next head) and llhttp's (a node:http server on loopback, default strict mode).
 * Each reading lists the messages read (method, target, version, header list, framing, decoded body,
 * trailers) and how the stream ended.
 */
import http from "node:http";
import net from "node:net";
import type { AddressInfo } from "node:net";
import { BodyFramer, FramingError } from "../../sidecar/http/http1/body.ts";
import type { RequestHead } from "../../sidecar/http/http1/head.ts";
import { scanRequestHead } from "../../sidecar/http/http1/head.ts";

export const MAX_HEAD = 16 * 1024;

export interface Message {
  readonly method: string;
  readonly target: string;
  readonly version: string;
  readonly headers: readonly string[];
  readonly framing: "none" | "length" | "chunked";
  readonly body: string;
  readonly trailers: readonly string[];
}

export interface Reading {
  readonly messages: Message[];
  /** "tunnel": the last message switched the connection to another protocol. */
  readonly end: "ok" | "refused" | "incomplete" | "tunnel";
  readonly reason?: string;
}

function framingOf(contentLength: number | null, chunked: boolean): Message["framing"] {
  if (chunked) return "chunked";
  return contentLength === null ? "none" : "length";
}

/** The trailer fields of a complete chunked body: the field lines after the last-chunk line. */
export function trailersOf(raw: string, lastDataEnd: number): string[] {
  const from = raw.indexOf("\r\n", lastDataEnd === 0 ? 0 : lastDataEnd + 2) + 2;
  const out: string[] = [];
  for (const line of raw.slice(from, raw.length - 2).split("\r\n")) {
    if (line === "") continue;
    const colon = line.indexOf(":");
    out.push(line.slice(0, colon), line.slice(colon + 1).trim());
  }
  return out;
}

function keepsAlive(head: RequestHead): boolean {
  return head.keepAlive && !head.upgrade && head.method !== "CONNECT";
}

/**
 * Sigil's reading of a client byte stream delivered in `pieces`, with the steps the sidecar's
 * connection takes: the head limit and early refusal of a partial head, then the body framer, and
 * the next head from the bytes after the body. An upgrade ends the reading at its head.
 */
export function sigilRequests(pieces: readonly Buffer[]): Reading {
  const messages: Message[] = [];
  let pending = Buffer.alloc(0);
  let head: RequestHead | null = null;
  let framer: BodyFramer | null = null;
  let raw: Buffer[] = [];
  let payload: Buffer[] = [];
  let rawLength = 0;
  let lastDataEnd = 0;
  for (const piece of pieces) {
    pending = Buffer.concat([pending, piece]);
    for (;;) {
      if (head === null) {
        if (pending.length === 0) break;
        // The connection's own head scan: the head limit and the early refusal of a partial head.
        const scan = scanRequestHead(pending, 0, MAX_HEAD);
        if (scan.kind === "partial") break;
        if (scan.kind === "refused") return { messages, end: "refused", reason: scan.reason };
        head = scan.head;
        pending = pending.subarray(scan.end);
        if (head.upgrade || head.method === "CONNECT") {
          messages.push(messageOf(head, "", []));
          return { messages, end: "tunnel" };
        }
        framer = BodyFramer.forRequest(head.contentLength, head.chunked, MAX_HEAD);
        raw = [];
        payload = [];
        rawLength = 0;
        lastDataEnd = 0;
      }
      const body = framer as BodyFramer;
      if (!body.done) {
        const spans: number[] = [];
        let n: number;
        try {
          n = body.consume(pending, 0, spans);
        } catch (err) {
          if (!(err instanceof FramingError)) throw err;
          return { messages, end: "refused", reason: err.reason };
        }
        for (let i = 0; i < spans.length; i += 2) {
          const [from, to] = [spans[i] as number, spans[i + 1] as number];
          payload.push(pending.subarray(from, to));
          if (to > from) lastDataEnd = rawLength + to;
        }
        raw.push(pending.subarray(0, n));
        rawLength += n;
        pending = pending.subarray(n);
      }
      if (!body.done) break;
      const done: RequestHead = head;
      const trailers = done.chunked ? trailersOf(Buffer.concat(raw).toString("latin1"), lastDataEnd) : [];
      messages.push(messageOf(done, Buffer.concat(payload).toString("latin1"), trailers));
      head = null;
      if (!keepsAlive(done)) return { messages, end: "ok" };
    }
  }
  return { messages, end: head !== null || pending.length > 0 ? "incomplete" : "ok" };
}

function messageOf(head: RequestHead, body: string, trailers: string[]): Message {
  return {
    method: head.method,
    target: head.target,
    version: `1.${head.minor}`,
    headers: head.raw,
    framing: framingOf(head.contentLength, head.chunked),
    body,
    trailers,
  };
}

function llhttpMessage(req: http.IncomingMessage, body: string): Message {
  const te = req.headers["transfer-encoding"];
  const chunked = te !== undefined && /(^|,)[ \t]*chunked[ \t]*$/i.test(te);
  return {
    method: req.method as string,
    target: req.url as string,
    version: req.httpVersion,
    headers: req.rawHeaders,
    framing: chunked ? "chunked" : req.headers["content-length"] !== undefined ? "length" : "none",
    body,
    trailers: req.rawTrailers,
  };
}

/** Whether llhttp reads on after `m` on the same connection. */
function llhttpKeepsAlive(m: Message): boolean {
  const connection: string[] = [];
  for (let i = 0; i < m.headers.length; i += 2)
    if ((m.headers[i] as string).toLowerCase() === "connection") connection.push(m.headers[i + 1] as string);
  const tokens = connection.join(",").toLowerCase();
  return m.version === "1.0" ? /keep-alive/.test(tokens) : !/close/.test(tokens);
}

/** A node:http server recording, per client connection, the requests llhttp read and how it ended. */
export class LlhttpServer {
  private readonly server = http.createServer({ maxHeaderSize: MAX_HEAD });
  private readonly byPort = new Map<number, { messages: Message[]; error?: string; tunnel?: boolean }>();
  private port = 0;

  private entry(port: number): { messages: Message[]; error?: string; tunnel?: boolean } {
    let e = this.byPort.get(port);
    if (e === undefined) this.byPort.set(port, (e = { messages: [] }));
    return e;
  }

  async start(): Promise<void> {
    const request = (req: http.IncomingMessage, res: http.ServerResponse): void => {
      const e = this.entry(req.socket.remotePort as number);
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        e.messages.push(llhttpMessage(req, Buffer.concat(chunks).toString("latin1")));
        res.end("ok");
      });
    };
    this.server.on("request", request);
    // Without a listener node:http answers an Expect other than 100-continue with 417 itself and
    // never hands on the message llhttp read; what is compared here is the reading, not that choice.
    this.server.on("checkExpectation", request);
    const tunnel = (req: http.IncomingMessage, socket: net.Socket): void => {
      const e = this.entry(req.socket.remotePort as number);
      e.messages.push(llhttpMessage(req, ""));
      e.tunnel = true;
      socket.destroy();
    };
    this.server.on("upgrade", tunnel);
    this.server.on("connect", tunnel);
    this.server.on("clientError", (err: NodeJS.ErrnoException, socket: net.Socket) => {
      this.entry(socket.remotePort as number).error = err.code ?? err.message;
      socket.destroy();
    });
    await new Promise<void>((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    this.port = (this.server.address() as AddressInfo).port;
  }

  /** llhttp's reading of `input` sent on one connection that the client then half-closes. */
  async read(input: Buffer): Promise<Reading> {
    const socket = net.connect(this.port, "127.0.0.1");
    await new Promise<void>((resolve, reject) => {
      socket.once("connect", resolve);
      socket.once("error", reject);
    });
    const port = socket.localPort as number;
    socket.on("data", () => undefined);
    socket.on("error", () => undefined);
    const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()));
    socket.end(input);
    const timer = setTimeout(() => socket.destroy(), 5000);
    await closed;
    clearTimeout(timer);
    // The server saw the close before the client did; its last callbacks run on the next turn.
    await new Promise((resolve) => setImmediate(resolve));
    const e = this.byPort.get(port) ?? { messages: [] };
    this.byPort.delete(port);
    const messages: Message[] = [];
    for (const m of e.messages) {
      messages.push(m);
      if (!llhttpKeepsAlive(m)) return { messages, end: e.tunnel ? "tunnel" : "ok" };
    }
    if (e.tunnel) return { messages, end: "tunnel" };
    return e.error !== undefined ? { messages, end: "refused", reason: e.error } : { messages, end: "ok" };
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

/** Refused and incomplete are the same answer: no message is read. */
export function comparable(r: Reading): { messages: Message[]; end: string } {
  return { messages: r.messages, end: r.end === "incomplete" ? "refused" : r.end };
}
