import http from "node:http";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Socket } from "node:net";
import type { Logger } from "pino";
import type { Dispatcher } from "undici";
import type { Peer } from "../core/identity.ts";
import type { Decision, HttpRequestFacts } from "../core/policy/index.ts";
import { normalizeRequestPath } from "../core/policy/index.ts";
import type { Authorizer, ConnectionFacts } from "./authorize.ts";
import { refusalDecision } from "../core/policy/index.ts";
import { reportedPath } from "./authorize.ts";
import { HOP_BY_HOP, connectionTokens, denialBody, rawResponse } from "./responses.ts";
import { splice } from "./splice.ts";
import type { UpstreamRoute, Upstreams } from "./upstreams.ts";

/**
 * HTTP/1.1 proxying. Node's llhttp parser runs in strict mode (no lenient flags) as the request
 * parser: it refuses duplicate Content-Length, Content-Length with Transfer-Encoding, obs-fold, bare
 * CR or LF and oversized heads; `framingProblem` adds what it accepts but a proxy must not (a
 * Transfer-Encoding other than exactly "chunked", repeated Host). Every refusal is a 400 and the
 * connection is closed, so no byte after a framing doubt is ever interpreted. Requests are decided
 * one at a time, each against the policy current at that moment; allowed ones are forwarded with
 * the normalized path through an undici pool, bodies streamed both ways.
 */

export interface HttpConnection {
  readonly facts: ConnectionFacts;
  /** The peer a request is decided against (egress: the Host header names a non-mesh destination). */
  peerFor(host: string | undefined): Peer;
  readonly route: UpstreamRoute;
}

export interface Http1Options {
  readonly maxHeaderBytes: number;
  readonly headersTimeoutMs: number;
  readonly keepAliveTimeoutMs: number;
}

function framingProblem(req: IncomingMessage): string | null {
  let hosts = 0;
  let lengths = 0;
  let encodings = 0;
  const raw = req.rawHeaders;
  for (let i = 0; i < raw.length; i += 2) {
    const name = (raw[i] as string).toLowerCase();
    if (name === "host") hosts++;
    else if (name === "content-length") lengths++;
    else if (name === "transfer-encoding") encodings++;
  }
  if (hosts > 1) return "more than one Host header";
  if (lengths > 1) return "more than one Content-Length header";
  if (lengths > 0 && encodings > 0) return "both Content-Length and Transfer-Encoding";
  const te = req.headers["transfer-encoding"];
  if (te !== undefined && te.trim().toLowerCase() !== "chunked")
    return `unsupported Transfer-Encoding "${te}"`;
  return null;
}

/** Request headers to send upstream: end-to-end ones only, as received (names, order, repeats). */
function forwardHeaders(req: IncomingMessage): string[] {
  const drop = connectionTokens(req.headers.connection);
  const out: string[] = [];
  const raw = req.rawHeaders;
  for (let i = 0; i < raw.length; i += 2) {
    const name = (raw[i] as string).toLowerCase();
    if (HOP_BY_HOP.has(name) || drop.has(name)) continue;
    out.push(raw[i] as string, raw[i + 1] as string);
  }
  return out;
}

function responseHeaders(
  headers: Record<string, string | string[] | undefined>,
): Record<string, string | string[]> {
  const drop = connectionTokens(headers.connection);
  const out: Record<string, string | string[]> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined || HOP_BY_HOP.has(name) || drop.has(name)) continue;
    out[name] = value;
  }
  return out;
}

function hasBody(req: IncomingMessage): boolean {
  return req.headers["transfer-encoding"] !== undefined || (req.headers["content-length"] ?? "0") !== "0";
}

export class Http1Proxy {
  private readonly server: http.Server;
  private readonly connections = new WeakMap<Socket, HttpConnection>();
  private draining = false;

  constructor(
    private readonly authorizer: Authorizer,
    private readonly upstreams: Upstreams,
    options: Http1Options,
    private readonly log: Logger,
  ) {
    this.server = http.createServer({
      maxHeaderSize: options.maxHeaderBytes,
      insecureHTTPParser: false,
      requireHostHeader: true,
      joinDuplicateHeaders: false,
      headersTimeout: options.headersTimeoutMs,
      keepAliveTimeout: options.keepAliveTimeoutMs,
      // Bodies may stream for as long as both ends want; the head is what is bounded.
      requestTimeout: 0,
    });
    this.server.on("request", (req: IncomingMessage, res: ServerResponse) => this.onRequest(req, res, false));
    this.server.on("checkContinue", (req: IncomingMessage, res: ServerResponse) =>
      this.onRequest(req, res, true),
    );
    this.server.on("upgrade", (req: IncomingMessage, socket: Socket, head: Buffer) =>
      this.onUpgrade(req, socket, head),
    );
    this.server.on("connect", (req: IncomingMessage, socket: Socket) => {
      this.refuseRaw(req, socket, 400, refusalDecision("malformed-request: CONNECT is not proxied"));
    });
    this.server.on("clientError", (err: NodeJS.ErrnoException, socket: Socket) =>
      this.onClientError(err, socket),
    );
  }

  /** Takes over a connection whose first bytes (`head`, possibly empty) were already read. */
  accept(socket: Socket, conn: HttpConnection, head: Buffer): void {
    this.connections.set(socket, conn);
    this.server.emit("connection", socket);
    if (head.length > 0) socket.emit("data", head);
    // Listeners accept paused; the parser now owns the socket's reads.
    socket.resume();
  }

  /** Stop keeping connections alive: idle ones close now, busy ones after their current response. */
  drain(): void {
    this.draining = true;
    this.server.closeIdleConnections();
  }

  private facts(req: IncomingMessage): HttpRequestFacts {
    const host = req.headers.host;
    return {
      method: req.method ?? "",
      path: req.url ?? "",
      ...(host === undefined ? {} : { host }),
      headers: req.headers,
    };
  }

  private decide(req: IncomingMessage, conn: HttpConnection): { decision: Decision; peer: Peer } {
    const peer = conn.peerFor(req.headers.host);
    const framing = framingProblem(req);
    if (framing !== null)
      return { decision: { ...refusalDecision(`malformed-request: ${framing}`), status: 400 }, peer };
    return { decision: this.authorizer.decide(conn.facts, this.facts(req), peer), peer };
  }

  private onRequest(req: IncomingMessage, res: ServerResponse, expectsContinue: boolean): void {
    const startedAt = Date.now();
    const conn = this.connections.get(req.socket);
    if (!conn) {
      req.socket.destroy();
      return;
    }
    const { decision, peer } = this.decide(req, conn);
    const flowHttp = (status: number) => ({
      method: req.method ?? "",
      path: reportedPath(decision, req.url ?? ""),
      status,
    });
    if (decision.verdict === "deny") {
      const status = decision.status === 400 ? 400 : 403;
      const body = denialBody(status, decision);
      // An unread request body would have to be drained to find the next request: close instead.
      const close = this.draining || decision.status === 400 || hasBody(req);
      res.writeHead(status, {
        "content-type": "application/json",
        "content-length": Buffer.byteLength(body),
        ...(close ? { connection: "close" } : {}),
      });
      res.end(body);
      this.authorizer.record(
        conn.facts,
        decision,
        { protocol: "http", http: flowHttp(status), bytesSent: body.length, bytesReceived: 0, startedAt },
        peer,
      );
      return;
    }
    if (expectsContinue) res.writeContinue();
    this.forward(req, res, conn, decision, peer, startedAt, flowHttp);
  }

  /**
   * Sends an allowed request upstream and streams the response back. The request body is the
   * incoming message itself and the response is written from undici's dispatch callbacks: no
   * intermediate streams, async iterators or abort controllers per request, and backpressure both
   * ways (a full downstream pauses the upstream read; undici pauses the request body).
   */
  private forward(
    req: IncomingMessage,
    res: ServerResponse,
    conn: HttpConnection,
    decision: Decision,
    peer: Peer,
    startedAt: number,
    flowHttp: (status: number) => { method: string; path: string; status: number },
  ): void {
    const normalized = normalizeRequestPath(req.url ?? "");
    const target = normalized.ok ? normalized.forwardTarget : (req.url ?? "/");
    let received = 0;
    let sent = 0;
    let status = 502;
    let done = false;
    let controller: Dispatcher.DispatchController | null = null;
    const finish = (err: Error | null): void => {
      if (done) return;
      done = true;
      res.off("close", onClose);
      res.off("drain", onDrain);
      if (err !== null) {
        if (!res.headersSent && !res.destroyed) {
          const body = denialBody(502, { policy: null, reason: `upstream: ${err.message}` });
          res.writeHead(502, {
            "content-type": "application/json",
            "content-length": Buffer.byteLength(body),
            connection: "close",
          });
          res.end(body);
        } else {
          res.destroy();
        }
        this.log.debug({ err: err.message, path: target }, "HTTP/1.1 upstream failed");
      }
      this.authorizer.record(
        conn.facts,
        decision,
        { protocol: "http", http: flowHttp(status), bytesSent: sent, bytesReceived: received, startedAt },
        peer,
      );
    };
    let downstreamGone = false;
    const onClose = (): void => {
      if (res.writableFinished) return;
      downstreamGone = true;
      controller?.abort(new Error("downstream closed"));
    };
    const onDrain = (): void => controller?.resume();
    res.once("close", onClose);
    res.on("drain", onDrain);
    const body = hasBody(req) ? req : null;
    if (body !== null) {
      // Paused first so that counting does not start the flow before undici reads the body.
      body.pause();
      body.on("data", (chunk: Buffer) => {
        received += chunk.length;
      });
    }
    const draining = (): boolean => this.draining;
    this.upstreams.http1(conn.route).dispatch(
      { method: req.method as string, path: target, headers: forwardHeaders(req), body },
      {
        onRequestStart(c) {
          controller = c;
          // The client may have gone while the request waited for a pooled connection.
          if (downstreamGone) c.abort(new Error("downstream closed"));
        },
        onResponseStart(_c, statusCode, headers) {
          // 1xx interim responses are not relayed (100-continue is answered by this proxy).
          if (statusCode < 200) return;
          status = statusCode;
          const out = responseHeaders(headers);
          if (draining()) out.connection = "close";
          res.writeHead(statusCode, out);
        },
        onResponseData(c, chunk) {
          sent += chunk.length;
          if (!res.write(chunk)) c.pause();
        },
        onResponseEnd() {
          res.end();
          finish(null);
        },
        onResponseError(_c, err) {
          finish(err);
        },
      },
    );
  }

  private refuseRaw(req: IncomingMessage, socket: Socket, status: 400 | 403, decision: Decision): void {
    const conn = this.connections.get(socket);
    const body = denialBody(status, decision);
    socket.end(rawResponse(status, body));
    if (conn) {
      this.authorizer.record(conn.facts, decision, {
        protocol: "http",
        http: { method: req.method ?? "", path: reportedPath(decision, req.url ?? ""), status },
        bytesSent: body.length,
        bytesReceived: 0,
        startedAt: Date.now(),
      });
    }
  }

  /** WebSocket and other upgrades: decided like any request, then spliced byte for byte. */
  private onUpgrade(req: IncomingMessage, socket: Socket, head: Buffer): void {
    const startedAt = Date.now();
    const conn = this.connections.get(socket);
    if (!conn) {
      socket.destroy();
      return;
    }
    const { decision, peer } = this.decide(req, conn);
    if (decision.verdict === "deny") {
      this.refuseRaw(req, socket, decision.status === 400 ? 400 : 403, decision);
      return;
    }
    const normalized = normalizeRequestPath(req.url ?? "");
    const target = normalized.ok ? normalized.forwardTarget : (req.url ?? "/");
    const lines = [`${req.method} ${target} HTTP/1.1`];
    for (let i = 0; i < req.rawHeaders.length; i += 2)
      lines.push(`${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}`);
    const requestHead = Buffer.from(`${lines.join("\r\n")}\r\n\r\n`, "latin1");
    const flowHttp = { method: req.method ?? "", path: reportedPath(decision, req.url ?? ""), status: 101 };
    this.upstreams.socket(conn.route, "http1").then(
      (up) => {
        splice(
          socket,
          up,
          (t) =>
            this.authorizer.record(
              conn.facts,
              decision,
              { protocol: "http", http: flowHttp, bytesSent: t.bToA, bytesReceived: t.aToB, startedAt },
              peer,
            ),
          Buffer.concat([requestHead, head]),
        );
      },
      (err: Error) => {
        const body = denialBody(502, { policy: null, reason: `upstream: ${err.message}` });
        socket.end(rawResponse(502, body));
        this.authorizer.record(
          conn.facts,
          decision,
          { protocol: "http", http: { ...flowHttp, status: 502 }, bytesSent: 0, bytesReceived: 0, startedAt },
          peer,
        );
      },
    );
  }

  private onClientError(err: NodeJS.ErrnoException, socket: Socket): void {
    const conn = this.connections.get(socket);
    if (err.code === "ECONNRESET" || !socket.writable) {
      socket.destroy();
      return;
    }
    const decision: Decision = {
      ...refusalDecision(`malformed-request: ${err.code ?? err.message}`),
      status: 400,
    };
    const body = denialBody(400, decision);
    socket.end(rawResponse(400, body));
    socket.destroySoon();
    if (conn) {
      this.authorizer.record(conn.facts, decision, {
        protocol: "http",
        http: { method: "", path: "", status: 400 },
        bytesSent: body.length,
        bytesReceived: 0,
        startedAt: Date.now(),
      });
    }
  }
}
