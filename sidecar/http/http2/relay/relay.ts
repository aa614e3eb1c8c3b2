import type { Socket } from "node:net";
import type { Logger } from "pino";
import type { HttpRequestFacts } from "../../../../core/policy/index.ts";
import { normalizeRequestPath } from "../../../../core/policy/index.ts";
import type { Authorizer } from "../../../authz/authorize.ts";
import { reportedPath } from "../../../authz/authorize.ts";
import { refused } from "../../../authz/refusal.ts";
import type { ProxiedConnection } from "../../../upstream/proxied-connection.ts";
import type { Upstreams } from "../../../upstream/upstreams.ts";
import type { BodiesOnGetHead } from "../../bodiless-methods.ts";
import { bodyRefusal, refusesBody } from "../../bodiless-methods.ts";
import { withForwardedClientCert } from "../../client-cert.ts";
import { HOP_BY_HOP } from "../../hop-by-hop.ts";
import type { Answer } from "../answers/answers.ts";
import { grpcStatusOf, isGrpc, refusalAnswer, unavailableAnswer } from "../answers/answers.ts";
import { ErrorCode } from "../frames/frame.ts";
import type { HeaderBlock } from "../hpack/decoder.ts";
import { Endpoint } from "./endpoint.ts";
import type { OnSent } from "./endpoint-stream.ts";
import { appendFields, headerObject, requestProblem, responseProblem, trailersProblem } from "./fields.ts";
import type { StreamLink } from "./relay-stream.ts";
import { RelayStream } from "./relay-stream.ts";
import { UpstreamLink } from "./upstream-link.ts";

/** Streams a client may have open at once on one connection (SETTINGS_MAX_CONCURRENT_STREAMS). */
const MAX_CONCURRENT_STREAMS = 128;

/** What a relay takes of the sidecar's HTTP/2 options. */
export interface RelayOptions {
  readonly maxHeaderListBytes: number;
  readonly bodiesOnGetHead: BodiesOnGetHead;
}

export interface RelayContext {
  readonly authorizer: Authorizer;
  readonly upstreams: Upstreams;
  readonly options: RelayOptions;
  readonly log: Logger;
  readonly now: () => number;
}

/**
 * An HTTP/2 connection relayed frame by frame: the client's streams are decided one by one and the
 * allowed ones forwarded on an upstream connection of this relay's own, their DATA passed on as it
 * arrives under both sides' flow control. Header blocks are decoded (policy reads them; the
 * client's XFCC goes, the sidecar's is added) and encoded again for the other side.
 */
export class H2Relay {
  private readonly down: Endpoint;
  private readonly streams = new Map<number, RelayStream>();
  private link: UpstreamLink | undefined;
  private readonly links = new Set<UpstreamLink>();

  constructor(
    socket: Socket,
    private readonly conn: ProxiedConnection,
    private readonly ctx: RelayContext,
    onClose: () => void,
  ) {
    this.down = new Endpoint(
      socket,
      {
        role: "server",
        maxHeaderListBytes: ctx.options.maxHeaderListBytes,
        maxConcurrentStreams: MAX_CONCURRENT_STREAMS,
        now: ctx.now,
      },
      {
        onHeaders: (id, block, end) => this.onRequestHeaders(id, block, end),
        onData: (id, data, end) => this.onRequestData(id, data, end),
        onReset: (id, code) => this.onClientReset(id, code),
        onGoaway: () => undefined,
        onClose: (reason, fault) => {
          if (fault) ctx.log.error({ err: fault }, "HTTP/2 relay failed on a downstream connection");
          else if (reason) ctx.log.debug({ reason }, "HTTP/2 downstream connection ended");
          this.closeAll();
          onClose();
        },
      },
    );
  }

  /** Bytes read before the relay took the connection (the preface, perhaps more). */
  receive(head: Buffer): void {
    if (head.length > 0) this.down.receive(head);
  }

  /** GOAWAY to the client: streams in flight finish, no new ones start. */
  drain(): void {
    this.down.shutdown();
  }

  private onRequestHeaders(id: number, block: HeaderBlock, end: boolean): void {
    const existing = this.streams.get(id);
    if (existing) return this.onRequestTrailers(existing, block, end);
    if (block.oversized) {
      this.answerNew(id, end, {
        headers: { ":status": "431" },
        body: undefined,
        status: 431,
      });
      return;
    }
    const problem = requestProblem(block.fields);
    if (problem) {
      this.ctx.log.debug({ problem }, "HTTP/2 request malformed");
      this.down.reset(id, ErrorCode.PROTOCOL_ERROR);
      return;
    }
    const headers = headerObject(block.fields);
    const host = headers[":authority"] ?? headers.host;
    // What the upstream receives, XFCC included, so a forged one cannot meet a header rule.
    const forwarded = withForwardedClientCert(headers, this.conn.forwardedClientCert);
    const facts: HttpRequestFacts = {
      method: headers[":method"] ?? "",
      path: headers[":path"] ?? "",
      host,
      headers: forwarded,
    };
    const declared = headers["content-length"];
    if (declared !== undefined && !/^\d{1,15}$/.test(declared)) {
      this.down.reset(id, ErrorCode.PROTOCOL_ERROR);
      return;
    }
    const stream = new RelayStream(
      id,
      headers,
      facts,
      this.conn.peerFor(host),
      isGrpc(headers),
      neverIndexedNames(block),
      declared === undefined ? undefined : Number(declared),
      Date.now(),
      end,
    );
    this.streams.set(id, stream);
    if (refusesBody(facts.method, this.ctx.options.bodiesOnGetHead)) {
      if (declared !== undefined && declared !== "0") return this.refuseBody(stream);
      // Decided once the client ended the stream: forwarded without a body if it sent none.
      if (!end) return;
    }
    this.lookUpAndDecide(stream);
  }

  private onRequestTrailers(stream: RelayStream, block: HeaderBlock, end: boolean): void {
    const problem = block.oversized ? "trailers above the header list limit" : trailersProblem(block.fields);
    if (!end || problem || stream.lengthMismatch(true)) return this.malformed(stream);
    stream.requestEnded = true;
    const fields: string[] = [];
    appendFields(headerObject(block.fields), fields);
    if (stream.phase === "forwarded")
      stream.link?.sendTrailers(stream, fields, neverIndexedOf(fields, stream));
    else if (stream.phase === "deciding" || stream.phase === "opening") {
      stream.pendingTrailers = fields;
      if (stream.phase === "deciding" && refusesBody(stream.facts.method, this.ctx.options.bodiesOnGetHead))
        this.lookUpAndDecide(stream);
    }
  }

  private onRequestData(id: number, data: Buffer, end: boolean): void {
    const stream = this.streams.get(id);
    if (!stream) {
      this.down.consumed(id, data.length);
      return;
    }
    stream.receivedBytes += data.length;
    if (stream.lengthMismatch(end)) return this.malformed(stream);
    if (end) stream.requestEnded = true;
    switch (stream.phase) {
      case "forwarded":
        stream.link?.sendData(stream, data, end, this.requestCredit(stream));
        if (end && stream.responseEnded) this.complete(stream);
        return;
      case "deciding":
        if (refusesBody(stream.facts.method, this.ctx.options.bodiesOnGetHead)) {
          this.down.consumed(id, data.length);
          if (data.length > 0) return this.refuseBody(stream);
          if (end) this.lookUpAndDecide(stream);
          return;
        }
        stream.pending.push(data);
        stream.pendingEnd = end;
        return;
      case "opening":
        stream.pending.push(data);
        stream.pendingEnd = end;
        return;
      default:
        this.down.consumed(id, data.length);
    }
  }

  private onClientReset(id: number, code: number): void {
    const stream = this.streams.get(id);
    if (!stream) return;
    stream.link?.reset(stream, code === ErrorCode.NO_ERROR ? ErrorCode.CANCEL : code);
    this.finish(stream);
  }

  private lookUpAndDecide(stream: RelayStream): void {
    const lookup = this.ctx.authorizer.nameLookup(this.conn.facts, stream.peer);
    if (lookup === null) return this.decide(stream);
    // Decided once the name has an answer; the stream's data waits under flow control.
    void lookup.then(() => {
      if (stream.phase === "deciding") this.decide(stream);
    });
  }

  private decide(stream: RelayStream): void {
    const decision = this.ctx.authorizer.decide(this.conn.facts, stream.facts, stream.peer);
    stream.decision = decision;
    if (decision.verdict === "deny") return this.answer(stream, refusalAnswer(decision, stream.grpc));
    const fields: string[] = [];
    const normalized = normalizeRequestPath(stream.headers[":path"] ?? "");
    fields.push(":method", stream.facts.method, ":scheme", "http");
    const authority = stream.headers[":authority"] ?? stream.headers.host;
    if (authority !== undefined) fields.push(":authority", authority);
    fields.push(":path", normalized.ok ? normalized.forwardTarget : stream.facts.path);
    appendFields(endToEnd(stream.facts.headers), fields);
    this.upstreamLink().open(stream, fields, neverIndexedOf(fields, stream));
  }

  private upstreamLink(): UpstreamLink {
    if (this.link && !this.link.isRetired) return this.link;
    const link: UpstreamLink = new UpstreamLink({
      onHeaders: (s, block, end) => this.onResponseHeaders(s, block, end),
      onData: (s, data, end) => this.onResponseData(s, data, end),
      onReset: (s, code) => this.onUpstreamReset(s, code),
      onOpened: (s) => this.flushPending(s),
      onLost: (s, reason) => this.lost(s, reason),
      onFault: (err) => this.ctx.log.error({ err }, "HTTP/2 relay failed on an upstream connection"),
      onRetired: (l) => {
        if (this.link === l) this.link = undefined;
      },
    });
    this.link = link;
    this.links.add(link);
    this.ctx.upstreams
      .h2Socket(this.conn.route, () => link.retire())
      .then(
        (socket) => {
          if (this.down.isClosed) socket.destroy();
          else
            link.connected(socket, {
              maxHeaderListBytes: this.ctx.options.maxHeaderListBytes,
              now: this.ctx.now,
            });
        },
        (err: Error) => link.failed(err.message),
      );
    return link;
  }

  /** Sends what the client sent while its stream was being decided and opened. */
  private flushPending(stream: RelayStream): void {
    const link = stream.link as StreamLink;
    stream.responseCredit = link.creditFor(stream.upId);
    const chunks = stream.pending.splice(0);
    const credit = this.requestCredit(stream);
    chunks.forEach((chunk, i) =>
      link.sendData(stream, chunk, stream.pendingEnd && i === chunks.length - 1, credit),
    );
    if (stream.pendingTrailers) {
      const fields = stream.pendingTrailers;
      stream.pendingTrailers = undefined;
      link.sendTrailers(stream, fields, neverIndexedOf(fields, stream));
    }
  }

  private onResponseHeaders(stream: RelayStream, block: HeaderBlock, end: boolean): void {
    const trailers = stream.responseStarted;
    const problem = block.oversized
      ? "response headers above the header list limit"
      : trailers
        ? trailersProblem(block.fields)
        : responseProblem(block.fields);
    if (problem || (trailers && !end)) {
      this.ctx.log.debug({ problem }, "HTTP/2 upstream response malformed");
      stream.link?.reset(stream, ErrorCode.PROTOCOL_ERROR);
      return this.lost(stream, `malformed response: ${problem ?? "trailers without END_STREAM"}`);
    }
    const fields: string[] = [];
    const never: number[] = [];
    let sensitive = 0;
    for (let i = 0; i < block.fields.length; i += 2) {
      const name = block.fields[i] as string;
      if (HOP_BY_HOP.has(name)) continue;
      if (block.neverIndexed[sensitive] === i / 2) {
        sensitive++;
        never.push(fields.length / 2);
      }
      fields.push(name, block.fields[i + 1] as string);
    }
    if (!trailers) {
      const status = Number(block.fields[1]);
      if (status < 200) {
        if (!end) this.down.sendHeaders(stream.downId, fields, never, false);
        return;
      }
      stream.status = status;
      stream.responseStarted = true;
    }
    const grpcStatus = grpcStatusOf(headerObject(block.fields));
    if (grpcStatus !== undefined) stream.grpcStatus = grpcStatus;
    this.down.sendHeaders(stream.downId, fields, never, end);
    if (end) this.responseEnded(stream);
  }

  private onResponseData(stream: RelayStream, data: Buffer, end: boolean): void {
    stream.sentBytes += data.length;
    this.down.sendData(stream.downId, data, end, stream.responseCredit);
    if (end) this.responseEnded(stream);
  }

  /**
   * The response is complete and recorded. A request still uploading keeps flowing upstream, unless
   * the upstream resets the stream to say it read enough (RFC 9113 §8.1).
   */
  private responseEnded(stream: RelayStream): void {
    stream.responseEnded = true;
    this.record(stream);
    if (stream.requestEnded) this.complete(stream);
  }

  private complete(stream: RelayStream): void {
    stream.link?.finished(stream);
    this.finish(stream);
  }

  private onUpstreamReset(stream: RelayStream, code: number): void {
    if (stream.responseEnded) {
      this.down.resetWhenSent(stream.downId, code);
      return this.finish(stream);
    }
    if (!stream.responseStarted) return this.lost(stream, `upstream reset the stream (${code})`);
    this.down.reset(stream.downId, code);
    this.finish(stream);
  }

  /** The upstream cannot answer the stream: the client hears so, or its stream is reset. */
  private lost(stream: RelayStream, reason: string): void {
    if (stream.phase === "done" || stream.phase === "answered") return;
    if (stream.responseStarted) {
      this.down.reset(stream.downId, ErrorCode.INTERNAL_ERROR);
      return this.finish(stream);
    }
    this.ctx.log.debug({ reason }, "HTTP/2 upstream unavailable");
    this.answer(stream, unavailableAnswer(reason, stream.grpc));
  }

  private refuseBody(stream: RelayStream): void {
    stream.decision = refused({
      kind: "malformed-request",
      problem: bodyRefusal(stream.facts.method, "DATA frames"),
    });
    this.answer(stream, refusalAnswer(stream.decision, stream.grpc));
  }

  /** A request whose framing lies (content-length against its DATA, bad trailers): reset both ways. */
  private malformed(stream: RelayStream): void {
    stream.link?.reset(stream, ErrorCode.PROTOCOL_ERROR);
    this.down.reset(stream.downId, ErrorCode.PROTOCOL_ERROR);
    this.finish(stream);
  }

  /** Answers a stream with the sidecar's own response; what the client still sends is dropped. */
  private answer(stream: RelayStream, a: Answer): void {
    stream.link?.reset(stream, ErrorCode.CANCEL);
    stream.phase = "answered";
    stream.status = a.status;
    if (a.grpcStatus !== undefined) stream.grpcStatus = a.grpcStatus;
    for (const chunk of stream.pending.splice(0)) this.down.consumed(stream.downId, chunk.length);
    this.send(stream.downId, a, !stream.requestEnded);
    this.finish(stream);
  }

  private answerNew(id: number, ended: boolean, a: Answer): void {
    this.send(id, a, !ended);
  }

  private send(id: number, a: Answer, stopClient: boolean): void {
    const fields: string[] = [];
    appendFields(a.headers, fields);
    this.down.sendHeaders(id, fields, [], a.body === undefined);
    if (a.body !== undefined) this.down.sendData(id, Buffer.from(a.body), true);
    // The answer is complete: a client still sending is told to stop (RFC 9113 §8.1).
    if (stopClient) this.down.resetWhenSent(id, ErrorCode.NO_ERROR);
  }

  /** Request DATA that left upstream: the client may send as much again. */
  private requestCredit(stream: RelayStream): OnSent {
    return (stream.requestCredit ??= (n) => this.down.consumed(stream.downId, n));
  }

  private finish(stream: RelayStream): void {
    if (stream.phase === "done") return;
    stream.phase = "done";
    this.streams.delete(stream.downId);
    this.record(stream);
  }

  private record(stream: RelayStream): void {
    const decision = stream.decision;
    if (!decision || stream.recorded) return;
    stream.recorded = true;
    this.ctx.authorizer.record(
      this.conn.facts,
      decision,
      {
        protocol: stream.grpc ? "grpc" : "http",
        http: {
          method: stream.facts.method,
          path: reportedPath(decision, stream.facts.path),
          status: stream.status,
        },
        grpcStatus: stream.grpcStatus,
        bytesSent: stream.sentBytes,
        bytesReceived: stream.receivedBytes,
        startedAt: stream.startedAt,
      },
      stream.peer,
    );
  }

  private closeAll(): void {
    for (const stream of [...this.streams.values()]) {
      stream.link?.reset(stream, ErrorCode.CANCEL);
      this.finish(stream);
    }
    for (const link of this.links) link.retire();
    this.links.clear();
  }
}

/** The end-to-end fields of a request: no pseudo-header, no hop-by-hop field. */
function endToEnd(
  headers: Readonly<Record<string, string | readonly string[] | undefined>>,
): Record<string, string | readonly string[] | undefined> {
  const out: Record<string, string | readonly string[] | undefined> = {};
  for (const name in headers) if (!name.startsWith(":") && !HOP_BY_HOP.has(name)) out[name] = headers[name];
  return out;
}

function neverIndexedNames(block: HeaderBlock): ReadonlySet<string> | undefined {
  if (block.neverIndexed.length === 0) return undefined;
  return new Set(block.neverIndexed.map((i) => block.fields[2 * i] as string));
}

/** Positions of the fields a client sent never-indexed, in a block built for the other side. */
function neverIndexedOf(fields: readonly string[], stream: RelayStream): number[] {
  const names = stream.neverIndexedNames;
  if (!names) return [];
  const out: number[] = [];
  for (let i = 0; i < fields.length; i += 2) if (names.has(fields[i] as string)) out.push(i / 2);
  return out;
}
