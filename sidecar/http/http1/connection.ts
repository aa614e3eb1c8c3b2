import type { Socket } from "node:net";
import type { Peer } from "../../../core/identity.ts";
import type { UserIdentity } from "../../../core/user.ts";
import { normalizeRequestPath } from "../../../core/policy/index.ts";
import { refused } from "../../authz/refusal.ts";
import { denialBody } from "../denial.ts";
import type { ProxiedConnection } from "../../upstream/proxied-connection.ts";
import { BodyFramer, FramingError } from "./body.ts";
import type { RequestHead } from "./head.ts";
import { scanRequestHead } from "./head.ts";
import type { Http1Pool, PoolUser, UpstreamConnection } from "../../upstream/http1-pool.ts";
import { rawResponse, upgradeRequestHead, upstreamRequestHead } from "./responses.ts";
import type { Admission } from "../../user-access/gate.ts";
import { userFields } from "../../user-access/user-fields.ts";
import type { ClientConnection, Exchange, Http1Context, HttpFlow } from "./exchange.ts";
import { recordHttpFlow } from "./exchange.ts";
import { keepsAliveAfterRefusal, refusedBeforeDecision, requestFacts } from "./request-checks.ts";
import type { RelayEvents } from "./response-relay.ts";
import { ResponseRelay } from "./response-relay.ts";
import { spliceUpgrade } from "./upgrade.ts";
import { mayResend } from "./resend.ts";

/** Request body bytes held while the exchange waits for a pooled connection, before reading pauses. */
const MAX_HELD_BODY = 64 * 1024;
const CONTINUE = "HTTP/1.1 100 Continue\r\n\r\n";
const ANONYMOUS: Admission = { kind: "forward", user: null };

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
export class Http1Connection implements PoolUser, ClientConnection {
  private state = State.Head;
  /** Client bytes received and not yet handled. */
  private pending: Buffer | null = null;
  /** Where to resume looking for the end of the head in `pending`. */
  private scanFrom = 0;
  /** When the current wait for a head began (connection start, or the end of the previous exchange). */
  since = Date.now();
  /** The current exchange, while the state is `Exchange`. */
  private ex: Exchange | null = null;
  /** The pool of this connection's route, looked up once: the route is fixed per connection. */
  private routePool: Http1Pool | null = null;

  private readonly relayEvents: RelayEvents = {
    complete: () => this.endExchange(null),
    fail: (reason) => this.fail(reason),
    switchProtocols: (head, rest) => this.switchProtocols(head, rest),
  };

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
      const ex = this.ex as Exchange;
      if (ex.up !== null && !ex.body.done) this.forwardBody(ex, chunk);
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
    if (this.ex?.up) this.ex.up.socket.resume();
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
    const ex = this.ex;
    const limit = ex !== null && ex.up === null && !ex.body.done ? MAX_HELD_BODY : 0;
    if (this.pending.length > limit) this.socket.pause();
  }

  /** Handles every complete request head in `pending`, one exchange at a time. */
  private nextRequest(): void {
    while (this.state === State.Head && this.pending !== null) {
      const buf = this.pending;
      const scan = scanRequestHead(buf, this.scanFrom, this.ctx.options.maxHeaderBytes);
      if (scan.kind === "partial") {
        this.scanFrom = scan.scanFrom;
        return;
      }
      if (scan.kind === "refused") {
        this.refuse(400, scan.reason, "", "");
        return;
      }
      this.pending = scan.end < buf.length ? buf.subarray(scan.end) : null;
      this.scanFrom = 0;
      this.request(scan.head);
    }
  }

  private request(req: RequestHead): void {
    const startedAt = Date.now();
    const refusal = refusedBeforeDecision(req, this.ctx.options.bodiesOnGetHead);
    if (refusal !== null) {
      this.refuse(400, refusal, req.method, req.target);
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
    this.record({
      decision: a.decision,
      method: req.method,
      target: req.target,
      status: a.answer.status,
      bytesSent: a.answer.raw.length,
      bytesReceived: 0,
      startedAt,
      peer,
      user: a.user,
    });
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
      const keepAlive = keepsAliveAfterRefusal(req, status, this.ctx.draining);
      this.socket.write(rawResponse(status, body, keepAlive ? this.ctx.options.keepAliveTimeoutMs : null));
      this.record({
        decision,
        method: req.method,
        target: req.target,
        status,
        bytesSent: body.length,
        bytesReceived: 0,
        startedAt,
        peer,
        user,
      });
      if (keepAlive) this.since = Date.now();
      else this.close();
      return;
    }
    const normalized = normalizeRequestPath(req.target);
    if (req.expectContinue) this.socket.write(CONTINUE);
    const upgrading = req.upgrade && !req.httpUpgrade;
    const body = BodyFramer.forRequest(req.contentLength, req.chunked, this.ctx.options.maxHeaderBytes);
    if (this.routePool === null || this.routePool.retired)
      this.routePool = this.ctx.upstreams.http1(this.conn.route);
    const pool = this.routePool;
    this.state = State.Exchange;
    this.ex = {
      req,
      upgrading,
      target: normalized.ok ? normalized.forwardTarget : req.target,
      decision,
      peer,
      user,
      userFields: fields,
      startedAt,
      body,
      pool,
      up: null,
      response: new ResponseRelay(this.socket, req, upgrading, body, this.ctx, this.relayEvents),
    };
    pool.acquire(this);
  }

  // --- the pooled upstream connection ---

  onUpstream(up: UpstreamConnection): void {
    const ex = this.ex as Exchange;
    const { req, body } = ex;
    ex.up = up;
    const clientCert = this.conn.forwardedClientCert;
    const head = ex.upgrading
      ? upgradeRequestHead(req, ex.target, clientCert, ex.userFields)
      : upstreamRequestHead(req, ex.target, clientCert, ex.userFields);
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
    if (this.ex !== null) this.ex.up = null;
    this.fail(`upstream: ${err.message}`);
  }

  private forwardBody(ex: Exchange, chunk: Buffer): void {
    let n: number;
    try {
      n = ex.body.consume(chunk, 0);
    } catch (err) {
      this.framingFailed(err);
      return;
    }
    const up = (ex.up as UpstreamConnection).socket;
    const flowing = up.write(n === chunk.length ? chunk : chunk.subarray(0, n));
    if (n < chunk.length) this.hold(chunk.subarray(n));
    else if (!flowing) this.socket.pause();
  }

  onUpstreamDrain(): void {
    if (this.ex !== null && !this.ex.body.done) this.socket.resume();
  }

  onUpstreamData(chunk: Buffer): void {
    const ex = this.ex;
    if (ex !== null) ex.response.data(chunk, (ex.up as UpstreamConnection).socket);
  }

  onUpstreamEnd(): void {
    if (this.ex !== null && this.ex.response.endedByClose()) {
      this.endExchange(null);
      return;
    }
    if (!this.resend()) this.fail("upstream: connection closed before the response ended");
  }

  onUpstreamClose(): void {
    if (this.resend()) return;
    if (this.ex !== null) this.ex.up = null;
    if (this.state === State.Exchange) this.fail("upstream: connection closed before the response ended");
  }

  /** The request goes out again on another connection when `mayResend` allows; false otherwise. */
  private resend(): boolean {
    const ex = this.ex;
    if (this.state !== State.Exchange || ex === null || ex.up === null || !mayResend(ex, ex.up)) return false;
    ex.pool.release(ex.up, false);
    ex.up = null;
    // The pool may have been emptied (and forgotten) by that connection's close: ask for it again.
    if (ex.pool.retired) ex.pool = this.routePool = this.ctx.upstreams.http1(this.conn.route);
    ex.pool.acquire(this);
    return true;
  }

  // --- endings ---

  private framingFailed(err: unknown): void {
    if (!(err instanceof FramingError)) throw err;
    const ex = this.ex as Exchange;
    ex.decision = refused({ kind: "malformed-request", problem: err.reason });
    ex.response.status = 400;
    if (!ex.response.started) this.socket.write(rawResponse(400, denialBody(400, ex.decision)));
    this.endExchange(`malformed request body: ${err.reason}`);
  }

  private fail(reason: string): void {
    if (this.state !== State.Exchange) return;
    const ex = this.ex as Exchange;
    if (!ex.response.started) {
      ex.response.status = 502;
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
    const ex = this.ex;
    if (ex !== null && ex.up === null) ex.pool.cancel(this);
    this.endExchange(reason);
    this.socket.destroy();
  }

  /**
   * Ends the current exchange: returns the upstream connection (reusable only after a complete
   * exchange), records the flow, and either closes the client connection or reads the next request.
   * `error` set means the exchange did not complete, and the client connection is closed.
   */
  private endExchange(error: string | null): void {
    if (this.state !== State.Exchange) return;
    const ex = this.ex as Exchange;
    const { response } = ex;
    const complete = error === null && ex.body.done;
    if (ex.up !== null)
      ex.pool.release(ex.up, complete && response.upstreamReusable, response.upstreamIdleMs);
    if (error !== null) this.ctx.log.debug({ err: error, path: ex.target }, "HTTP/1.1 exchange failed");
    this.record({
      decision: ex.decision,
      method: ex.req.method,
      target: ex.req.target,
      status: response.status,
      bytesSent: response.bytesSent,
      bytesReceived: ex.body.dataBytes,
      startedAt: ex.startedAt,
      peer: ex.peer,
      user: ex.user,
    });
    const close = error !== null || response.closeAfter || !complete || this.ctx.draining;
    this.ex = null;
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
    this.record({
      decision,
      method,
      target,
      status,
      bytesSent: body.length,
      bytesReceived: 0,
      startedAt: Date.now(),
    });
    this.close();
  }

  private record(flow: HttpFlow): void {
    recordHttpFlow(this.ctx.authorizer, this.conn.facts, flow);
  }

  /** Finishes what was written, then closes; nothing more is read. */
  close(): void {
    if (this.state === State.Gone) return;
    this.state = State.Gone;
    this.pending = null;
    this.socket.destroySoon();
  }

  /**
   * The upstream answered an upgrade request with 101: its head (and whatever followed it) goes to
   * the client and the two connections are spliced byte for byte. Only a request whose body ended
   * may switch, and only if the client waited for the 101: bytes it sent before are refused, never
   * forwarded, since nobody can tell which protocol they were meant in.
   */
  private switchProtocols(head: Buffer, rest: Buffer | null): void {
    const ex = this.ex as Exchange;
    if (!ex.body.done) {
      this.fail("upstream: switching protocols before the request body ended");
      return;
    }
    if (this.pending !== null) {
      ex.response.status = 400;
      ex.decision = refused({ kind: "malformed-request", problem: "bytes sent before the protocol switch" });
      this.socket.write(rawResponse(400, denialBody(400, ex.decision)));
      this.endExchange("client sent bytes before the protocol switch");
      return;
    }
    const s = this.socket;
    const up = (ex.up as UpstreamConnection).detach();
    s.off("data", this.onData);
    s.off("end", this.onEnd);
    s.off("close", this.onClose);
    s.off("drain", this.onDrain);
    this.state = State.Gone;
    this.ctx.forget(this);
    spliceUpgrade(s, up, ex, head, rest, this.ctx.authorizer, this.conn.facts);
  }
}
