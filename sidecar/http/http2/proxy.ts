import http2 from "node:http2";
import type {
  IncomingHttpHeaders,
  OutgoingHttpHeaders,
  ServerHttp2Session,
  ServerHttp2Stream,
} from "node:http2";
import type { Socket } from "node:net";
import type { Logger } from "pino";
import type { Peer } from "../../../core/identity.ts";
import type { Decision, HttpRequestFacts } from "../../../core/policy/index.ts";
import { normalizeRequestPath } from "../../../core/policy/index.ts";
import type { Authorizer } from "../../authz/authorize.ts";
import { refused } from "../../authz/refusal.ts";
import type { BodiesOnGetHead } from "../bodiless-methods.ts";
import { bodyRefusal, refusesBody } from "../bodiless-methods.ts";
import type { Answer } from "./answers/answers.ts";
import { H2Relay } from "./relay/relay.ts";
import { grpcStatusOf, isGrpc, refusalAnswer, unavailableAnswer } from "./answers/answers.ts";
import { reportedPath } from "../../authz/authorize.ts";
import { withForwardedClientCert } from "../client-cert.ts";
import type { ProxiedConnection } from "../../upstream/proxied-connection.ts";
import { HOP_BY_HOP } from "../hop-by-hop.ts";
import type { Upstreams } from "../../upstream/upstreams.ts";

/**
 * HTTP/2 and gRPC proxying: one server session per downstream connection, each stream decided on its
 * own against the current policy and forwarded over a shared upstream session. Headers, data and
 * trailers keep their frames' meaning: a trailers-only response stays trailers-only, trailers arrive
 * after the body, and a reset on either side resets the other.
 */

const { NGHTTP2_FLAG_END_STREAM, NGHTTP2_CANCEL, NGHTTP2_INTERNAL_ERROR, NGHTTP2_NO_ERROR } = http2.constants;

/** Records the response's HTTP status and, for gRPC, the status it carried (headers or trailers). */
type SetStatus = (status: number, grpcStatus?: number) => void;

/** Header fields by lower-cased name, as a stream received them or as the sidecar forwards them. */
type ForwardedFields = Readonly<Record<string, string | string[] | undefined>>;

/** Copies the end-to-end fields of `headers` into `out`: no hop-by-hop field, no pseudo-header but `:status` when kept. */
function endToEnd(
  headers: ForwardedFields,
  keepStatus: boolean,
  out: OutgoingHttpHeaders = {},
): OutgoingHttpHeaders {
  for (const name in headers) {
    const value = headers[name];
    if (value === undefined || HOP_BY_HOP.has(name)) continue;
    if (name.startsWith(":") && !(keepStatus && name === ":status")) continue;
    out[name] = value;
  }
  return out;
}

export interface Http2Options {
  readonly maxHeaderListBytes: number;
  readonly bodiesOnGetHead: BodiesOnGetHead;
  /** "sessions": node:http2 sessions, streams shared upstream; "relay": Sigil's frame relay (`relay/`). */
  readonly engine: Http2Engine;
}

export type Http2Engine = "sessions" | "relay";

/** One downstream stream on its way to a decision: what it asked for and who asked. */
interface StreamExchange {
  readonly stream: ServerHttp2Stream;
  readonly headers: IncomingHttpHeaders;
  /** The request's fields as the upstream receives them, and as policy sees them (`facts.headers`). */
  readonly forwarded: ForwardedFields;
  readonly conn: ProxiedConnection;
  readonly facts: HttpRequestFacts;
  readonly peer: Peer;
  readonly startedAt: number;
}

export class Http2Proxy {
  private readonly sessions = new Set<ServerHttp2Session>();
  private readonly relays = new Set<H2Relay>();

  constructor(
    private readonly authorizer: Authorizer,
    private readonly upstreams: Upstreams,
    private readonly options: Http2Options,
    private readonly log: Logger,
  ) {}

  /** Takes over a connection that starts with the HTTP/2 preface (`head` are bytes already read). */
  accept(socket: Socket, conn: ProxiedConnection, head: Buffer): void {
    if (this.options.engine === "relay") {
      const relay: H2Relay = new H2Relay(
        socket,
        conn,
        {
          authorizer: this.authorizer,
          upstreams: this.upstreams,
          options: this.options,
          log: this.log,
          now: Date.now,
        },
        () => this.relays.delete(relay),
      );
      this.relays.add(relay);
      relay.receive(head);
      return;
    }
    if (head.length > 0) socket.unshift(head);
    const session = http2.performServerHandshake(socket, {
      settings: { maxHeaderListSize: this.options.maxHeaderListBytes },
    });
    this.sessions.add(session);
    session.on("stream", (stream, headers) => this.onStream(stream, headers, conn));
    session.on("error", (err) => this.log.debug({ err: err.message }, "HTTP/2 downstream session error"));
    session.once("close", () => this.sessions.delete(session));
  }

  /** Sends GOAWAY: streams in flight finish, no new ones start. */
  drain(): void {
    for (const s of this.sessions) s.close();
    for (const r of this.relays) r.drain();
  }

  private onStream(stream: ServerHttp2Stream, headers: IncomingHttpHeaders, conn: ProxiedConnection): void {
    const startedAt = Date.now();
    stream.on("error", () => undefined);
    const host = headers[":authority"] ?? headers.host;
    // What the upstream receives, XFCC included, so a forged one cannot meet a header rule.
    const forwarded = withForwardedClientCert(headers, conn.forwardedClientCert);
    const facts: HttpRequestFacts = {
      method: headers[":method"] ?? "",
      path: headers[":path"] ?? "",
      host,
      headers: forwarded,
    };
    const x: StreamExchange = {
      stream,
      headers,
      forwarded,
      conn,
      facts,
      peer: conn.peerFor(host),
      startedAt,
    };
    if (refusesBody(facts.method, this.options.bodiesOnGetHead) && !stream.endAfterHeaders) {
      // Decided once the client ended the stream: forwarded without a body if it sent none.
      void bodyIsEmpty(stream, headers["content-length"]).then((empty) => {
        if (stream.closed || stream.destroyed) return;
        if (empty) this.lookUpAndDecide(x, true);
        else this.refuseBody(x);
      });
      return;
    }
    this.lookUpAndDecide(x, stream.endAfterHeaders);
  }

  private lookUpAndDecide(x: StreamExchange, bodyEnded: boolean): void {
    const { stream, conn, peer } = x;
    const lookup = this.authorizer.nameLookup(conn.facts, peer);
    if (lookup === null) {
      this.decideStream(x, bodyEnded);
      return;
    }
    // Decided once the name has an answer; the stream's data waits under HTTP/2 flow control.
    void lookup.then(() => {
      if (!stream.destroyed && !stream.closed) this.decideStream(x, bodyEnded);
    });
  }

  private refuseBody(x: StreamExchange): void {
    const { stream, headers, conn, facts, peer, startedAt } = x;
    const decision = refused({
      kind: "malformed-request",
      problem: bodyRefusal(facts.method, "DATA frames"),
    });
    const grpc = isGrpc(headers);
    const { status, grpcStatus } = this.refuse(stream, decision, grpc);
    this.authorizer.record(
      conn.facts,
      decision,
      {
        protocol: grpc ? "grpc" : "http",
        http: { method: facts.method, path: reportedPath(decision, facts.path), status },
        grpcStatus,
        bytesSent: 0,
        bytesReceived: 0,
        startedAt,
      },
      peer,
    );
  }

  private decideStream(x: StreamExchange, bodyEnded: boolean): void {
    const { stream, headers, forwarded, conn, facts, peer, startedAt } = x;
    const grpc = isGrpc(headers);
    const decision = this.authorizer.decide(conn.facts, facts, peer);
    const protocol = grpc ? "grpc" : "http";
    let status = 0;
    let grpcStatus: number | undefined;
    let sent = 0;
    let received = 0;
    let recorded = false;
    const record = (): void => {
      if (recorded) return;
      recorded = true;
      this.authorizer.record(
        conn.facts,
        decision,
        {
          protocol,
          http: { method: facts.method, path: reportedPath(decision, facts.path), status },
          grpcStatus,
          bytesSent: sent,
          bytesReceived: received,
          startedAt,
        },
        peer,
      );
    };
    if (decision.verdict === "deny") {
      ({ status, grpcStatus } = this.refuse(stream, decision, grpc));
      record();
      return;
    }
    stream.once("close", record);
    void this.forward(
      stream,
      headers,
      forwarded,
      conn,
      bodyEnded,
      (s, g) => {
        status = s;
        if (g !== undefined) grpcStatus = g;
      },
      (n) => (sent += n),
      (n) => (received += n),
    );
  }

  private refuse(
    stream: ServerHttp2Stream,
    decision: Decision,
    grpc: boolean,
  ): { status: number; grpcStatus?: number } {
    return answer(stream, refusalAnswer(decision, grpc));
  }

  private async forward(
    stream: ServerHttp2Stream,
    headers: IncomingHttpHeaders,
    forwarded: ForwardedFields,
    conn: ProxiedConnection,
    bodyEnded: boolean,
    setStatus: SetStatus,
    addSent: (n: number) => void,
    addReceived: (n: number) => void,
  ): Promise<void> {
    const grpc = isGrpc(headers);
    const normalized = normalizeRequestPath(headers[":path"] ?? "");
    const out: OutgoingHttpHeaders = {
      ":method": headers[":method"],
      ":path": normalized.ok ? normalized.forwardTarget : headers[":path"],
      ":scheme": "http",
    };
    const authority = headers[":authority"] ?? headers.host;
    if (authority !== undefined) out[":authority"] = authority;
    // The fields policy decided on, the sidecar's own XFCC the only one: built in one object, since
    // every stream pays for each copy.
    endToEnd(forwarded, false, out);
    let session;
    try {
      session = await this.upstreams.h2(conn.route);
    } catch (err) {
      this.unavailable(stream, grpc, (err as Error).message, setStatus);
      return;
    }
    if (stream.closed || stream.destroyed) return;
    const endStream = bodyEnded;
    let up: http2.ClientHttp2Stream;
    try {
      up = session.request(out, { endStream });
    } catch (err) {
      this.unavailable(stream, grpc, (err as Error).message, setStatus);
      return;
    }
    let trailers: OutgoingHttpHeaders | null = null;
    let status = 0;
    up.on("trailers", (t: IncomingHttpHeaders) => {
      trailers = endToEnd(t, false);
      setStatus(status, grpcStatusOf(t));
    });
    up.on("response", (h: IncomingHttpHeaders, flags: number) => {
      if (stream.closed || stream.destroyed) return;
      status = Number(h[":status"] ?? 0);
      setStatus(status, grpcStatusOf(h));
      const respHeaders = endToEnd(h, true);
      if (flags & NGHTTP2_FLAG_END_STREAM) {
        stream.respond(respHeaders, { endStream: true });
        return;
      }
      stream.respond(respHeaders, { waitForTrailers: true });
      stream.once("wantTrailers", () => stream.sendTrailers(trailers ?? {}));
      relay(up, stream, addSent);
    });
    up.on("error", (err) => {
      if (!stream.headersSent) this.unavailable(stream, grpc, err.message, setStatus);
      else stream.close(NGHTTP2_INTERNAL_ERROR);
    });
    up.once("close", () => {
      if (stream.closed) return;
      if (up.rstCode !== undefined && up.rstCode !== 0) {
        if (!stream.headersSent)
          this.unavailable(stream, grpc, `upstream reset the stream (${up.rstCode})`, setStatus);
        else stream.close(up.rstCode);
      } else if (!endStream && !stream.readableEnded && stream.writableEnded) {
        // The upstream answered in full and stopped reading the request (RFC 9113 §8.1): the
        // client is told the same, else its upload waits on flow control that never opens.
        stream.close(NGHTTP2_NO_ERROR);
      }
    });
    stream.once("close", () => {
      if (!up.closed && !up.readableEnded)
        up.close(stream.rstCode && stream.rstCode !== 0 ? stream.rstCode : NGHTTP2_CANCEL);
    });
    if (!endStream) {
      // Counted only from here: a data listener attached earlier would start the flow before the
      // upstream stream exists and lose the first bytes.
      relay(stream, up, addReceived);
    }
  }

  private unavailable(stream: ServerHttp2Stream, grpc: boolean, reason: string, setStatus: SetStatus): void {
    if (stream.closed || stream.destroyed || stream.headersSent) return;
    this.log.debug({ reason }, "HTTP/2 upstream unavailable");
    const { status, grpcStatus } = answer(stream, unavailableAnswer(reason, grpc));
    setStatus(status, grpcStatus);
  }
}

/** Sends one of the sidecar's own answers on a stream; returns what the flow records. */
function answer(stream: ServerHttp2Stream, a: Answer): { status: number; grpcStatus?: number } {
  if (a.body === undefined) stream.respond(a.headers, { endStream: true });
  else {
    stream.respond(a.headers);
    stream.end(a.body);
  }
  return a.grpcStatus === undefined ? { status: a.status } : { status: a.status, grpcStatus: a.grpcStatus };
}

/**
 * Moves one stream's DATA to the other and ends it with them, pausing the source while the
 * destination's buffer is full. What `pipe` does for these streams, without the listeners it adds
 * and removes per stream: a stream that closes early is handled by the close handlers of `forward`.
 */
function relay(from: http2.Http2Stream, to: http2.Http2Stream, count: (n: number) => void): void {
  const resume = (): void => {
    from.resume();
  };
  from.on("data", (chunk: Buffer) => {
    count(chunk.length);
    if (!to.write(chunk)) {
      from.pause();
      to.once("drain", resume);
    }
  });
  from.once("end", () => to.end());
}

/**
 * Reads a GET/HEAD stream to its end: true when it carried no body (an empty DATA frame may end
 * it), false at its first body byte or a declared non-zero content-length.
 */
function bodyIsEmpty(stream: ServerHttp2Stream, declared: string | undefined): Promise<boolean> {
  if (declared !== undefined && declared !== "0") return Promise.resolve(false);
  return new Promise((resolve) => {
    const settle = (empty: boolean): void => {
      stream.off("data", onData);
      stream.off("end", onEnd);
      stream.off("close", onEnd);
      resolve(empty);
    };
    const onData = (chunk: Buffer): void => {
      if (chunk.length > 0) settle(false);
    };
    const onEnd = (): void => settle(true);
    stream.on("data", onData);
    stream.once("end", onEnd);
    stream.once("close", onEnd);
  });
}
