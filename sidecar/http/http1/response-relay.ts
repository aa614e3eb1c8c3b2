import type { Socket } from "node:net";
import { BodyFramer } from "./body.ts";
import type { RequestHead, ResponseHead } from "./head.ts";
import { HeadError, headEnd, parseResponseHead } from "./head.ts";
import { downstreamResponseHead } from "./responses.ts";
import { keepAliveIdleMs } from "./keep-alive-hint.ts";

/** Largest upstream response head accepted; a larger one is a 502. */
const MAX_RESPONSE_HEAD = 64 * 1024;
const EMPTY = Buffer.alloc(0);

/** What the relay tells the connection that owns the exchange. */
export interface RelayEvents {
  /** The response ended on its framing: the exchange is complete. */
  complete(): void;
  /** The upstream's response is malformed, truncated or cannot be relayed. */
  fail(reason: string): void;
  /** The upstream answered the upgrade with 101: `head` is that response's head, `rest` what followed. */
  switchProtocols(head: Buffer, rest: Buffer | null): void;
}

/**
 * The response half of one exchange: reads the upstream's response head (interim responses
 * skipped), writes the client's head, and relays the body byte for byte as its framing allows,
 * de-chunked for an HTTP/1.0 client. It decides whether the client and upstream connections may
 * carry another exchange once this one ends.
 */
export class ResponseRelay {
  /** The status the flow is recorded with: the upstream's, or the sidecar's own refusal. */
  status = 502;
  /** The upstream connection may serve another exchange once this one completes. */
  upstreamReusable = false;
  /** How long the upstream said it keeps the connection idle, less a margin (`keep-alive-hint.ts`). */
  upstreamIdleMs: number | null = null;
  /** The client connection closes after this response. */
  closeAfter = false;
  /** Whether the upstream sent any byte of a response (an interim one counts). */
  receivedAny = false;
  /** Upstream bytes received before the response head was complete. */
  private pending: Buffer | null = null;
  private head: ResponseHead | null = null;
  private body: BodyFramer | null = null;
  private dechunk = false;
  private readonly spans: number[] = [];

  constructor(
    private readonly client: Socket,
    private readonly req: RequestHead,
    private readonly upgrading: boolean,
    private readonly requestBody: BodyFramer,
    private readonly proxy: {
      readonly draining: boolean;
      readonly options: { readonly keepAliveTimeoutMs: number };
    },
    private readonly events: RelayEvents,
  ) {}

  /** Whether the response head went to the client: after that a failure can only cut the connection. */
  get started(): boolean {
    return this.head !== null;
  }

  /** Payload bytes of the response relayed so far. */
  get bytesSent(): number {
    return this.body?.dataBytes ?? 0;
  }

  /** Bytes from the upstream; `upstream` is paused while the client cannot take more. */
  data(chunk: Buffer, upstream: Socket): void {
    this.receivedAny = true;
    if (this.head === null) {
      this.pending = this.pending === null ? chunk : Buffer.concat([this.pending, chunk]);
      this.responseHead(upstream);
      return;
    }
    this.forward(chunk, 0, null, upstream);
  }

  /**
   * The upstream half-closed: that ends a close-delimited response (and the connection's reuse);
   * false means the response was cut short.
   */
  endedByClose(): boolean {
    const body = this.body;
    if (this.head === null || body === null || body.kind !== "close") return false;
    body.endOfInput();
    this.upstreamReusable = false;
    return true;
  }

  /** Reads the response head (skipping interim 1xx responses) and starts relaying the response. */
  private responseHead(upstream: Socket): void {
    for (;;) {
      const buf = this.pending as Buffer;
      const end = headEnd(buf, 0);
      if (end < 0) {
        if (buf.length > MAX_RESPONSE_HEAD) this.events.fail("upstream: response head too large");
        return;
      }
      let res: ResponseHead;
      try {
        res = parseResponseHead(buf.toString("latin1", 0, end));
      } catch (err) {
        if (!(err instanceof HeadError)) throw err;
        this.events.fail(`upstream: ${err.reason}`);
        return;
      }
      const rest = end < buf.length ? buf.subarray(end) : null;
      if (res.status < 200) {
        // 100-continue is answered by this proxy; interim responses stop here.
        if (res.status === 101) {
          if (this.upgrading) this.events.switchProtocols(buf.subarray(0, end), rest);
          else this.events.fail("upstream: switching protocols without an upgrade request");
          return;
        }
        this.pending = rest;
        if (rest === null) return;
        continue;
      }
      this.pending = null;
      this.start(res, rest, upstream);
      return;
    }
  }

  private start(res: ResponseHead, rest: Buffer | null, upstream: Socket): void {
    const req = this.req;
    const noBody = req.method === "HEAD" || res.status === 204 || res.status === 304;
    let body: BodyFramer;
    if (noBody) body = new BodyFramer("none", 0, 0);
    else if (res.chunked) body = new BodyFramer("chunked", 0, MAX_RESPONSE_HEAD);
    else if (res.contentLength !== null) body = new BodyFramer("length", res.contentLength, 0);
    else body = new BodyFramer("close", 0, 0);
    this.head = res;
    this.body = body;
    this.status = res.status;
    // An HTTP/1.0 client cannot read chunked framing: it gets the payload alone, ended by the close.
    this.dechunk = res.chunked && !noBody && req.minor === 0;
    // An upgrade the server declined still leaves the client unsure what the connection speaks,
    // and whatever it sent after the request was meant for the new protocol: close both (the
    // upstream only if it saw the upgrade; an h2c one went as a plain request).
    this.upstreamIdleMs = keepAliveIdleMs(res.raw);
    this.upstreamReusable =
      res.keepAlive && body.kind !== "close" && !this.upgrading && this.upstreamIdleMs !== 0;
    this.closeAfter =
      req.upgrade ||
      this.proxy.draining ||
      !req.keepAlive ||
      req.minor === 0 ||
      body.kind === "close" ||
      !this.requestBody.done;
    const head = downstreamResponseHead(
      res,
      res.chunked && !noBody && !this.dechunk,
      this.closeAfter ? null : this.proxy.options.keepAliveTimeoutMs,
    );
    this.forward(rest ?? EMPTY, 0, head, upstream);
  }

  /** Relays response bytes from `start` (after `head`, if given) and completes the exchange with the body. */
  private forward(chunk: Buffer, start: number, head: string | null, upstream: Socket): void {
    const body = this.body as BodyFramer;
    const spans = this.dechunk ? this.spans : undefined;
    let n: number;
    try {
      n = body.consume(chunk, start, spans);
    } catch (err) {
      this.events.fail(`upstream: ${(err as Error).message}`);
      return;
    }
    let out: Buffer | null;
    if (spans !== undefined) out = payload(chunk, head, spans);
    else if (head === null)
      out = n === 0 ? null : n === chunk.length ? chunk : chunk.subarray(start, start + n);
    else if (n === 0) out = Buffer.from(head, "latin1");
    else {
      out = Buffer.allocUnsafe(head.length + n);
      out.write(head, 0, "latin1");
      chunk.copy(out, head.length, start, start + n);
    }
    if (start + n < chunk.length) {
      // Bytes after the end of the response: this upstream connection cannot be trusted again.
      this.upstreamReusable = false;
    }
    if (out !== null && !this.client.write(out) && !body.done) upstream.pause();
    if (body.done) this.events.complete();
  }
}

/** The de-chunked payload: the head, then the data spans the framer marked; `spans` is emptied. */
function payload(chunk: Buffer, head: string | null, spans: number[]): Buffer | null {
  const parts: Buffer[] = head === null ? [] : [Buffer.from(head, "latin1")];
  for (let i = 0; i < spans.length; i += 2) parts.push(chunk.subarray(spans[i], spans[i + 1]));
  spans.length = 0;
  return parts.length === 0 ? null : Buffer.concat(parts);
}
