import type { Socket } from "node:net";
import type { Logger } from "pino";
import type { Peer } from "../../../core/identity.ts";
import type { UserIdentity } from "../../../core/user.ts";
import type { Decision, HttpRequestFacts } from "../../../core/policy/index.ts";
import { normalizeRequestPath } from "../../../core/policy/index.ts";
import type { Authorizer } from "../../authz/authorize.ts";
import { reportedPath } from "../../authz/authorize.ts";
import { refused } from "../../authz/refusal.ts";
import { withForwardedClientCert } from "../client-cert.ts";
import { denialBody } from "../denial.ts";
import { splice } from "../../tunnel/splice.ts";
import type { ProxiedConnection } from "../../upstream/proxied-connection.ts";
import type { Upstreams } from "../../upstream/upstreams.ts";
import type { BodiesOnGetHead } from "../bodiless-methods.ts";
import { bodyRefusal, refusesBody } from "../bodiless-methods.ts";
import { BodyFramer, FramingError } from "./body.ts";
import type { RequestHead, ResponseHead } from "./head.ts";
import { HeadError, headEnd, parseRequestHead, parseResponseHead, partialHeadProblem } from "./head.ts";
import type { Http1Pool, PoolUser, UpstreamConnection } from "../../upstream/http1-pool.ts";
import { downstreamResponseHead, rawResponse, upgradeRequestHead, upstreamRequestHead } from "./responses.ts";
import type { Admission } from "../../user-access/gate.ts";
import { userFields } from "../../user-access/user-fields.ts";

export interface Http1Options {
  readonly maxHeaderBytes: number;
  readonly bodiesOnGetHead: BodiesOnGetHead;
  readonly headersTimeoutMs: number;
  readonly keepAliveTimeoutMs: number;
}

/** What every connection of one proxy shares. */
export interface Http1Context {
  readonly authorizer: Authorizer;
  readonly upstreams: Upstreams;
  readonly options: Http1Options;
  readonly log: Logger;
  readonly draining: boolean;
  forget(conn: Http1Connection): void;
}

/** Largest upstream response head accepted; a larger one is a 502. */
const MAX_RESPONSE_HEAD = 64 * 1024;
/** Request body bytes held while the exchange waits for a pooled connection, before reading pauses. */
const MAX_HELD_BODY = 64 * 1024;
const CONTINUE = "HTTP/1.1 100 Continue\r\n\r\n";

const enum State {
  /** Waiting for (the rest of) a request head. */
  Head,
  /** A request is decided and allowed: its head and body go upstream, its response comes back. */
  Exchange,
  /** A request head waits for a name lookup its decision needs: bytes are held, reading pauses. */
  Deciding,
  /** The connection became a tunnel or is closing: this object no longer reads it. */
  Gone,
}

/**
 * One client connection: reads request heads, decides each request on its own, and relays allowed
 * ones over a pooled upstream connection, bytes forwarded as they arrive with both bodies framed by
 * `BodyFramer`. One request at a time: bytes of a pipelined next request wait (reading paused)
 * until the current response is complete.
 */
export class Http1Connection implements PoolUser {
  private state = State.Head;
  /** Client bytes received and not yet handled. */
  private pending: Buffer | null = null;
  /** Where to resume looking for the end of the head in `pending`. */
  private scanFrom = 0;
  /** When the current wait for a head began (connection start, or the end of the previous exchange). */
  since = Date.now();

  // The current exchange; reset by `endExchange`.
  private req: RequestHead | null = null;
  /**
   * The request asks to switch to a protocol that is not HTTP again: the connection becomes a
   * tunnel only after a 101. An h2c upgrade never does (`RequestHead.httpUpgrade`).
   */
  private upgrading = false;
  private decision: Decision | null = null;
  private peer: Peer | null = null;
  /** The person the current request was verified for, with the fields that tell the application. */
  private user: UserIdentity | null = null;
  private userFields: Record<string, string> | undefined = undefined;
  private startedAt = 0;
  private target = "";
  private reqBody: BodyFramer | null = null;
  private pool: Http1Pool | null = null;
  private up: UpstreamConnection | null = null;
  private resPending: Buffer | null = null;
  private res: ResponseHead | null = null;
  private resBody: BodyFramer | null = null;
  private dechunk: boolean = false;
  private closeAfter = false;
  private upstreamReusable = false;
  private status = 502;
  private readonly spans: number[] = [];
  /** The pool of this connection's route, looked up once: the route is fixed per connection. */
  private routePool: Http1Pool | null = null;

  constructor(
    readonly socket: Socket,
    private readonly conn: ProxiedConnection,
    private readonly ctx: Http1Context,
  ) {}

  private readonly onData = (chunk: Buffer): void => {
    if (this.state === State.Head) {
      this.append(chunk);
      this.nextRequest();
    } else if (this.state === State.Exchange) {
      if (this.up !== null && this.reqBody !== null && !this.reqBody.done) this.forwardBody(chunk);
      else this.hold(chunk);
    } else if (this.state === State.Deciding) {
      this.hold(chunk);
    }
  };

  // A client that half-closes is gone: what it asked for is abandoned, as with node:http's default.
  private readonly onEnd = (): void => {
    if (this.state === State.Exchange) this.abort("client closed");
    else this.close();
  };

  private readonly onClose = (): void => {
    if (this.state === State.Exchange) this.abort("client closed");
    this.state = State.Gone;
    this.ctx.forget(this);
  };

  private readonly onDrain = (): void => {
    if (this.up !== null) this.up.socket.resume();
  };

  private readonly onError = (): void => undefined;

  start(head: Buffer): void {
    const s = this.socket;
    s.on("data", this.onData);
    s.on("end", this.onEnd);
    s.on("close", this.onClose);
    s.on("drain", this.onDrain);
    s.on("error", this.onError);
    if (head.length > 0) this.onData(head);
    // Listeners accept paused; this object now owns the socket's reads.
    if (this.state !== State.Gone) s.resume();
  }

  /** Whether the connection waits for a request with nothing received of it. */
  get idle(): boolean {
    return this.state === State.Head && this.pending === null;
  }

  /** Called by the proxy's timer: closes a connection that waited too long for a head. */
  expire(now: number): void {
    if (this.state !== State.Head) return;
    const limit =
      this.pending === null ? this.ctx.options.keepAliveTimeoutMs : this.ctx.options.headersTimeoutMs;
    if (now - this.since < limit) return;
    if (this.pending === null) this.close();
    else this.refuse(408, "request head not received in time", "", "");
  }

  private append(chunk: Buffer): void {
    if (this.pending === null) {
      this.pending = chunk;
      this.scanFrom = 0;
      this.since = Date.now();
    } else {
      this.pending = Buffer.concat([this.pending, chunk]);
    }
  }

  /** Bytes that arrive while an exchange cannot take them (a pipelined request, a body before its hop). */
  private hold(chunk: Buffer): void {
    this.pending = this.pending === null ? chunk : Buffer.concat([this.pending, chunk]);
    const limit = this.up === null && this.reqBody !== null && !this.reqBody.done ? MAX_HELD_BODY : 0;
    if (this.pending.length > limit) this.socket.pause();
  }

  /** Handles every complete request head in `pending`, one exchange at a time. */
  private nextRequest(): void {
    while (this.state === State.Head && this.pending !== null) {
      const buf = this.pending;
      const end = headEnd(buf, this.scanFrom);
      const max = this.ctx.options.maxHeaderBytes;
      if (end < 0) {
        // The limit counts the head without its final CRLF CRLF, which may still be on its way.
        if (buf.length >= max + 4) {
          this.refuse(400, `request head larger than ${max} bytes`, "", "");
          return;
        }
        const problem = partialHeadProblem(buf.toString("latin1"));
        if (problem !== null) this.refuse(400, problem, "", "");
        else this.scanFrom = Math.max(0, buf.length - 3);
        return;
      }
      if (end > max + 4) {
        this.refuse(400, `request head larger than ${max} bytes`, "", "");
        return;
      }
      let req: RequestHead;
      try {
        req = parseRequestHead(buf.toString("latin1", 0, end));
      } catch (err) {
        if (!(err instanceof HeadError)) throw err;
        this.refuse(400, err.reason, "", "");
        return;
      }
      this.pending = end < buf.length ? buf.subarray(end) : null;
      this.scanFrom = 0;
      this.request(req);
    }
  }

  private request(req: RequestHead): void {
    const startedAt = Date.now();
    if (req.method === "CONNECT") {
      this.refuse(400, "CONNECT is not proxied", req.method, req.target);
      return;
    }
    if (refusesBody(req.method, this.ctx.options.bodiesOnGetHead) && requestHasBody(req)) {
      const framing = req.chunked ? "Transfer-Encoding: chunked" : `Content-Length: ${req.contentLength}`;
      this.refuse(400, bodyRefusal(req.method, framing), req.method, req.target);
      return;
    }
    const peer = this.conn.peerFor(req.host);
    const lookup = this.ctx.authorizer.nameLookup(this.conn.facts, peer);
    const gate = this.conn.userAccess;
    if (lookup === null && gate === undefined) {
      this.decideRequest(req, peer, startedAt, null);
      return;
    }
    // Decided once the name has an answer or the user is known; what arrives meanwhile is held
    // (reading paused).
    this.state = State.Deciding;
    const admitted: Promise<Admission> =
      gate === undefined
        ? (lookup as Promise<void>).then(() => ANONYMOUS)
        : gate.admit({ method: req.method, target: req.target, headers: req.byName, peer });
    void admitted.then((admission) => {
      if (this.state !== State.Deciding) return;
      this.state = State.Head;
      if (admission.kind === "answer") {
        this.answer(req, peer, startedAt, admission);
        return;
      }
      this.decideRequest(req, peer, startedAt, admission.user);
      if (this.state !== State.Head) return;
      if (this.pending !== null) this.nextRequest();
      if (this.state === State.Head) this.socket.resume();
    });
  }

  /** The user-access gate answered the request itself (sign-in, callback, 401): nothing goes upstream. */
  private answer(req: RequestHead, peer: Peer, startedAt: number, a: Admission & { kind: "answer" }): void {
    this.socket.write(a.answer.raw);
    this.ctx.authorizer.record(
      this.conn.facts,
      a.decision,
      {
        protocol: "http",
        http: { method: req.method, path: reportedPath(a.decision, req.target), status: a.answer.status },
        bytesSent: a.answer.raw.length,
        bytesReceived: 0,
        startedAt,
      },
      peer,
      a.user,
    );
    this.close();
  }

  private decideRequest(req: RequestHead, peer: Peer, startedAt: number, user: UserIdentity | null): void {
    const fields = user === null ? undefined : userFields(user);
    const decision = this.ctx.authorizer.decide(
      this.conn.facts,
      requestFacts(req, this.conn.forwardedClientCert, fields),
      peer,
      user,
    );
    const gate = this.conn.userAccess;
    if (decision.verdict === "deny" && user !== null && gate !== undefined && decision.status !== 400) {
      this.answer(req, peer, startedAt, {
        kind: "answer",
        answer: gate.denied(decision, user),
        decision,
        user,
      });
      return;
    }
    if (decision.verdict === "deny") {
      const status = decision.status === 400 ? 400 : 403;
      const body = denialBody(status, decision);
      // An unread request body would have to be drained to find the next request, and a refused
      // upgrade leaves the client unsure what the connection speaks: close instead.
      const keepAlive =
        !this.ctx.draining &&
        status === 403 &&
        req.minor === 1 &&
        req.keepAlive &&
        !req.upgrade &&
        !req.chunked &&
        (req.contentLength ?? 0) === 0;
      this.socket.write(rawResponse(status, body, keepAlive));
      this.ctx.authorizer.record(
        this.conn.facts,
        decision,
        {
          protocol: "http",
          http: { method: req.method, path: reportedPath(decision, req.target), status },
          bytesSent: body.length,
          bytesReceived: 0,
          startedAt,
        },
        peer,
        user,
      );
      if (keepAlive) this.since = Date.now();
      else this.close();
      return;
    }
    const normalized = normalizeRequestPath(req.target);
    const target = normalized.ok ? normalized.forwardTarget : req.target;
    if (req.expectContinue) this.socket.write(CONTINUE);
    this.state = State.Exchange;
    this.req = req;
    this.upgrading = req.upgrade && !req.httpUpgrade;
    this.decision = decision;
    this.peer = peer;
    this.user = user;
    this.userFields = fields;
    this.startedAt = startedAt;
    this.target = target;
    this.reqBody = BodyFramer.forRequest(req.contentLength, req.chunked, this.ctx.options.maxHeaderBytes);
    this.status = 502;
    if (this.routePool === null || this.routePool.retired)
      this.routePool = this.ctx.upstreams.http1(this.conn.route);
    this.pool = this.routePool;
    this.pool.acquire(this);
  }

  // --- the pooled upstream connection ---

  onUpstream(up: UpstreamConnection): void {
    const req = this.req as RequestHead;
    const body = this.reqBody as BodyFramer;
    this.up = up;
    const clientCert = this.conn.forwardedClientCert;
    const head = this.upgrading
      ? upgradeRequestHead(req, this.target, clientCert, this.userFields)
      : upstreamRequestHead(req, this.target, clientCert, this.userFields);
    let out: Buffer;
    let n = 0;
    const pending = this.pending;
    if (pending !== null) {
      try {
        n = body.consume(pending, 0);
      } catch (err) {
        this.framingFailed(err);
        return;
      }
    }
    if (n === 0) {
      out = Buffer.from(head, "latin1");
    } else {
      // Head and the body bytes already here leave in one write.
      out = Buffer.allocUnsafe(head.length + n);
      out.write(head, 0, "latin1");
      (pending as Buffer).copy(out, head.length, 0, n);
      this.pending = n < (pending as Buffer).length ? (pending as Buffer).subarray(n) : null;
    }
    const flowing = up.socket.write(out);
    if (!body.done && flowing) this.socket.resume();
    else if (!flowing) this.socket.pause();
  }

  onUpstreamFailed(err: Error): void {
    this.up = null;
    this.fail(`upstream: ${err.message}`);
  }

  private forwardBody(chunk: Buffer): void {
    const body = this.reqBody as BodyFramer;
    let n: number;
    try {
      n = body.consume(chunk, 0);
    } catch (err) {
      this.framingFailed(err);
      return;
    }
    const up = (this.up as UpstreamConnection).socket;
    const flowing = up.write(n === chunk.length ? chunk : chunk.subarray(0, n));
    if (n < chunk.length) this.hold(chunk.subarray(n));
    else if (!flowing) this.socket.pause();
  }

  onUpstreamDrain(): void {
    if (this.reqBody !== null && !this.reqBody.done) this.socket.resume();
  }

  onUpstreamData(chunk: Buffer): void {
    if (this.res === null) {
      this.resPending = this.resPending === null ? chunk : Buffer.concat([this.resPending, chunk]);
      this.responseHead();
      return;
    }
    this.forwardResponse(chunk, 0, null);
  }

  /** Reads the response head (skipping interim 1xx responses) and starts relaying the response. */
  private responseHead(): void {
    for (;;) {
      const buf = this.resPending as Buffer;
      const end = headEnd(buf, 0);
      if (end < 0) {
        if (buf.length > MAX_RESPONSE_HEAD) this.fail("upstream: response head too large");
        return;
      }
      let res: ResponseHead;
      try {
        res = parseResponseHead(buf.toString("latin1", 0, end));
      } catch (err) {
        if (!(err instanceof HeadError)) throw err;
        this.fail(`upstream: ${err.reason}`);
        return;
      }
      const rest = end < buf.length ? buf.subarray(end) : null;
      if (res.status < 200) {
        // 100-continue is answered by this proxy; interim responses stop here.
        if (res.status === 101) {
          if (this.upgrading) this.switchProtocols(buf.subarray(0, end), rest);
          else this.fail("upstream: switching protocols without an upgrade request");
          return;
        }
        this.resPending = rest;
        if (rest === null) return;
        continue;
      }
      this.resPending = null;
      this.startResponse(res, rest);
      return;
    }
  }

  private startResponse(res: ResponseHead, rest: Buffer | null): void {
    const req = this.req as RequestHead;
    const noBody = req.method === "HEAD" || res.status === 204 || res.status === 304;
    let body: BodyFramer;
    if (noBody) body = new BodyFramer("none", 0, 0);
    else if (res.chunked) body = new BodyFramer("chunked", 0, MAX_RESPONSE_HEAD);
    else if (res.contentLength !== null) body = new BodyFramer("length", res.contentLength, 0);
    else body = new BodyFramer("close", 0, 0);
    this.res = res;
    this.resBody = body;
    this.status = res.status;
    // An HTTP/1.0 client cannot read chunked framing: it gets the payload alone, ended by the close.
    this.dechunk = res.chunked && !noBody && req.minor === 0;
    // An upgrade the server declined still leaves the client unsure what the connection speaks,
    // and whatever it sent after the request was meant for the new protocol: close both (the
    // upstream only if it saw the upgrade; an h2c one went as a plain request).
    this.upstreamReusable = res.keepAlive && body.kind !== "close" && !this.upgrading;
    this.closeAfter =
      req.upgrade ||
      this.ctx.draining ||
      !req.keepAlive ||
      req.minor === 0 ||
      body.kind === "close" ||
      !(this.reqBody as BodyFramer).done;
    const head = downstreamResponseHead(res, res.chunked && !noBody && !this.dechunk, this.closeAfter);
    this.forwardResponse(rest ?? EMPTY, 0, head);
  }

  /** Relays response bytes from `start` (after `head`, if given) and ends the exchange with the body. */
  private forwardResponse(chunk: Buffer, start: number, head: string | null): void {
    const body = this.resBody as BodyFramer;
    const spans = this.dechunk ? this.spans : undefined;
    let n: number;
    try {
      n = body.consume(chunk, start, spans);
    } catch (err) {
      this.fail(`upstream: ${(err as Error).message}`);
      return;
    }
    let out: Buffer | null;
    if (spans !== undefined) out = this.payload(chunk, head, spans);
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
    if (out !== null && !this.socket.write(out) && !body.done) (this.up as UpstreamConnection).socket.pause();
    if (body.done) this.endExchange(null);
  }

  private payload(chunk: Buffer, head: string | null, spans: number[]): Buffer | null {
    const parts: Buffer[] = head === null ? [] : [Buffer.from(head, "latin1")];
    for (let i = 0; i < spans.length; i += 2) parts.push(chunk.subarray(spans[i], spans[i + 1]));
    spans.length = 0;
    return parts.length === 0 ? null : Buffer.concat(parts);
  }

  onUpstreamEnd(): void {
    const body = this.resBody;
    if (this.res !== null && body !== null && body.kind === "close") {
      body.endOfInput();
      this.upstreamReusable = false;
      this.endExchange(null);
      return;
    }
    this.fail("upstream: connection closed before the response ended");
  }

  onUpstreamClose(): void {
    this.up = null;
    if (this.state === State.Exchange) this.fail("upstream: connection closed before the response ended");
  }

  // --- endings ---

  private framingFailed(err: unknown): void {
    if (!(err instanceof FramingError)) throw err;
    const req = this.req as RequestHead;
    const decision = refused({ kind: "malformed-request", problem: err.reason });
    this.decision = decision;
    this.status = 400;
    if (this.res === null) this.socket.write(rawResponse(400, denialBody(400, decision)));
    this.endExchange(`malformed request body: ${err.reason}`, req);
  }

  private fail(reason: string): void {
    if (this.state !== State.Exchange) return;
    if (this.res === null) {
      this.status = 502;
      if (!this.socket.destroyed)
        this.socket.write(rawResponse(502, denialBody(502, { policy: null, reason })));
      this.endExchange(reason);
    } else {
      // Part of the response is out: only cutting the connection tells the client it is incomplete.
      this.endExchange(reason);
      this.socket.destroy();
    }
  }

  /** The client is gone or broke off mid-request: nothing more is sent either way. */
  private abort(reason: string): void {
    if (this.pool !== null && this.up === null) this.pool.cancel(this);
    this.endExchange(reason);
    this.socket.destroy();
  }

  /**
   * Ends the current exchange: returns the upstream connection (reusable only after a complete
   * exchange), records the flow, and either closes the client connection or reads the next request.
   * `error` set means the exchange did not complete, and the client connection is closed.
   */
  private endExchange(error: string | null, req: RequestHead | null = this.req): void {
    if (this.state !== State.Exchange) return;
    const up = this.up;
    const complete = error === null && (this.reqBody as BodyFramer).done;
    if (up !== null) (this.pool as Http1Pool).release(up, complete && this.upstreamReusable);
    if (error !== null) this.ctx.log.debug({ err: error, path: this.target }, "HTTP/1.1 exchange failed");
    const r = req as RequestHead;
    this.ctx.authorizer.record(
      this.conn.facts,
      this.decision as Decision,
      {
        protocol: "http",
        http: {
          method: r.method,
          path: reportedPath(this.decision as Decision, r.target),
          status: this.status,
        },
        bytesSent: this.resBody?.dataBytes ?? 0,
        bytesReceived: this.reqBody?.dataBytes ?? 0,
        startedAt: this.startedAt,
      },
      this.peer as Peer,
      this.user,
    );
    const close = error !== null || this.closeAfter || !complete || this.ctx.draining;
    this.req = null;
    this.upgrading = false;
    this.decision = null;
    this.peer = null;
    this.user = null;
    this.userFields = undefined;
    this.reqBody = null;
    this.pool = null;
    this.up = null;
    this.res = null;
    this.resBody = null;
    this.resPending = null;
    this.dechunk = false;
    this.closeAfter = false;
    if (close) {
      this.close();
      return;
    }
    this.state = State.Head;
    this.since = Date.now();
    if (this.pending !== null) this.nextRequest();
    if (this.state === State.Head) this.socket.resume();
  }

  /** Answers a request that is not forwarded and closes the connection. */
  private refuse(status: 400 | 408, reason: string, method: string, target: string): void {
    const decision = refused({ kind: "malformed-request", problem: reason });
    const body = denialBody(400, decision);
    this.socket.write(rawResponse(status, body));
    this.ctx.authorizer.record(this.conn.facts, decision, {
      protocol: "http",
      http: { method, path: target === "" ? "" : reportedPath(decision, target), status },
      bytesSent: body.length,
      bytesReceived: 0,
      startedAt: Date.now(),
    });
    this.close();
  }

  /** Finishes what was written, then closes; nothing more is read. */
  close(): void {
    if (this.state === State.Gone) return;
    this.state = State.Gone;
    this.pending = null;
    this.socket.destroySoon();
  }

  // --- upgrades ---

  /**
   * The upstream answered an upgrade request with 101: its head (and whatever followed it) goes to
   * the client and the two connections are spliced byte for byte. Only a request whose body ended
   * may switch, and only if the client waited for the 101: bytes it sent before are refused, never
   * forwarded, since nobody can tell which protocol they were meant in.
   */
  private switchProtocols(head: Buffer, rest: Buffer | null): void {
    if (!(this.reqBody as BodyFramer).done) {
      this.fail("upstream: switching protocols before the request body ended");
      return;
    }
    if (this.pending !== null) {
      this.status = 400;
      const decision = refused({
        kind: "malformed-request",
        problem: "bytes sent before the protocol switch",
      });
      this.decision = decision;
      this.socket.write(rawResponse(400, denialBody(400, decision)));
      this.endExchange("client sent bytes before the protocol switch");
      return;
    }
    const s = this.socket;
    const up = (this.up as UpstreamConnection).detach();
    s.off("data", this.onData);
    s.off("end", this.onEnd);
    s.off("close", this.onClose);
    s.off("drain", this.onDrain);
    this.state = State.Gone;
    this.ctx.forget(this);
    const req = this.req as RequestHead;
    const decision = this.decision as Decision;
    const peer = this.peer as Peer;
    const user = this.user;
    const startedAt = this.startedAt;
    const received = (this.reqBody as BodyFramer).dataBytes;
    const flowHttp = { method: req.method, path: reportedPath(decision, req.target), status: 101 };
    const { authorizer } = this.ctx;
    const facts = this.conn.facts;
    splice(
      up,
      s,
      (t) =>
        authorizer.record(
          facts,
          decision,
          {
            protocol: "http",
            http: flowHttp,
            bytesSent: t.aToB - head.length,
            bytesReceived: received + t.bToA,
            startedAt,
          },
          peer,
          user,
        ),
      rest === null ? head : Buffer.concat([head, rest]),
    );
  }
}

const EMPTY = Buffer.alloc(0);
const ANONYMOUS: Admission = { kind: "forward", user: null };

/** What policy decides on: the fields the upstream receives, XFCC and user fields included. */
function requestFacts(
  req: RequestHead,
  clientCert: string | undefined,
  user: Readonly<Record<string, string>> | undefined,
): HttpRequestFacts {
  const headers = withForwardedClientCert(req.byName, clientCert, user);
  return req.host === undefined
    ? { method: req.method, path: req.target, headers }
    : { method: req.method, path: req.target, host: req.host, headers };
}

function requestHasBody(req: RequestHead): boolean {
  return req.chunked || (req.contentLength ?? 0) > 0;
}
