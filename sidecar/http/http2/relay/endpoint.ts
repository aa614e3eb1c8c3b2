import type { Socket } from "node:net";
import type { HeaderBlock } from "../hpack/decoder.ts";
import { HpackDecoder } from "../hpack/decoder.ts";
import { HpackEncoder } from "../hpack/encoder.ts";
import { HpackError } from "../hpack/hpack-error.ts";
import type { Frame } from "../frames/frame-reader.ts";
import { FrameReader } from "../frames/frame-reader.ts";
import {
  DEFAULT_MAX_FRAME_SIZE,
  DEFAULT_WINDOW,
  ErrorCode,
  Flag,
  FrameType,
  MAX_WINDOW,
  PREFACE,
  Setting,
  goawayFrame,
  headerFrames,
  pingAck,
  rstStreamFrame,
  settingsAck,
  settingsFrame,
  windowUpdateFrame,
} from "../frames/frame.ts";
import { ConnectionError, unpad } from "./connection-error.ts";
import { CorkedWriter } from "./corked-writer.ts";
import { FloodGuard } from "./flood-guard.ts";
import { checkFrameShape } from "./frame-shape.ts";
import type { WholeBlock } from "./header-block.ts";
import { HeaderBlockAssembler } from "./header-block.ts";
import { PeerSettings } from "./peer-settings.ts";
import type { OnSent } from "./endpoint-stream.ts";
import { EndpointStream, OutboundData } from "./endpoint-stream.ts";
import { DataSender } from "./data-sender.ts";

/** What an endpoint tells the relay about its peer's streams. */
export interface EndpointEvents {
  /** A whole header block on stream `id` (a new stream's request, a response, trailers). */
  onHeaders(id: number, block: HeaderBlock, endStream: boolean): void;
  /** DATA on stream `id`, padding removed; the relay calls `consumed` once it passed the bytes on. */
  onData(id: number, data: Buffer, endStream: boolean): void;
  onReset(id: number, code: number): void;
  /** The peer will take no stream above `lastStreamId`. */
  onGoaway(lastStreamId: number, code: number): void;
  /**
   * The connection is gone; every stream on it with it. `fault` is set when this side failed on
   * something it did not expect: a defect to report, not a peer's misbehaviour.
   */
  onClose(reason: string | undefined, fault?: unknown): void;
}

export interface EndpointOptions {
  /** "server": the peer opens streams (the downstream side); "client": this side opens them. */
  readonly role: "server" | "client";
  readonly maxHeaderListBytes: number;
  readonly maxConcurrentStreams: number;
  readonly now: () => number;
}

/** What this side lets a peer have in flight on the connection before its credit returns. */
const CONNECTION_WINDOW = 1 << 20;

/**
 * One side of a relayed HTTP/2 connection: its frames, its HPACK state, its settings and flow-control
 * windows. SETTINGS, PING, GOAWAY and connection flow control end here; streams' headers, data and
 * resets go to the relay, which decides where they go next.
 */
export class Endpoint {
  private readonly reader: FrameReader;
  private readonly decoder: HpackDecoder;
  private readonly encoder = new HpackEncoder();
  private readonly streams = new Map<number, EndpointStream>();
  private readonly resets: FloodGuard;
  private readonly idleFrames: FloodGuard;
  private readonly peer = new PeerSettings();
  private readonly headerBlock: HeaderBlockAssembler;
  private readonly out: CorkedWriter;
  private readonly sender: DataSender;
  private recvWindow = CONNECTION_WINDOW;
  private recvUnreturned = 0;
  /** The highest stream id the peer opened (server) or this side opened (client). */
  private lastStreamId = 0;
  private nextStreamId = 1;
  private goingAway = false;
  private closed = false;
  /** Set once the peer sent GOAWAY: no stream above it will be processed. */
  peerLastStreamId: number | undefined;

  constructor(
    private readonly socket: Socket,
    private readonly options: EndpointOptions,
    private readonly events: EndpointEvents,
  ) {
    const server = options.role === "server";
    this.reader = new FrameReader(DEFAULT_MAX_FRAME_SIZE, server);
    this.decoder = new HpackDecoder({ maxTableSize: 4096, maxListSize: options.maxHeaderListBytes });
    this.resets = new FloodGuard(1000, 33, options.now);
    this.idleFrames = new FloodGuard(1000, 100, options.now);
    this.headerBlock = new HeaderBlockAssembler(options.maxHeaderListBytes);
    this.out = new CorkedWriter(socket, () => this.gone("the peer stopped reading"));
    this.sender = new DataSender(
      this.out,
      this.peer,
      () => !this.closed,
      (stream) => this.emptied(stream),
    );
    if (!server) this.write(PREFACE);
    const settings: [number, number][] = [[Setting.MAX_HEADER_LIST_SIZE, options.maxHeaderListBytes]];
    settings.push(
      server ? [Setting.MAX_CONCURRENT_STREAMS, options.maxConcurrentStreams] : [Setting.ENABLE_PUSH, 0],
    );
    this.write(settingsFrame(settings));
    this.write(windowUpdateFrame(0, CONNECTION_WINDOW - DEFAULT_WINDOW));
    socket.on("data", (chunk: Buffer) => this.receive(chunk));
    socket.on("drain", () => this.sender.drained());
    socket.on("error", (err) => this.gone(err.message));
    socket.on("close", () => this.gone(undefined));
    socket.on("end", () => socket.end());
    // Protocol detection hands the socket over paused.
    socket.resume();
  }

  /** Bytes already read from the socket before the endpoint took it. */
  receive(chunk: Buffer): void {
    if (this.closed) return;
    try {
      const error = this.reader.push(chunk, (f) => {
        this.onFrame(f);
        return !this.closed;
      });
      if (error)
        this.fail(
          new ConnectionError(
            error.code === "preface" ? ErrorCode.PROTOCOL_ERROR : ErrorCode.FRAME_SIZE_ERROR,
            error.message,
          ),
        );
    } catch (err) {
      if (err instanceof ConnectionError) this.fail(err);
      else if (err instanceof HpackError)
        this.fail(new ConnectionError(ErrorCode.COMPRESSION_ERROR, err.message));
      else this.fail(new ConnectionError(ErrorCode.INTERNAL_ERROR, "internal error"), err);
    }
  }

  /** Whether this side may open another stream now (client role). */
  canOpen(): boolean {
    return (
      !this.closed &&
      !this.goingAway &&
      this.peerLastStreamId === undefined &&
      this.streams.size < this.peer.maxStreams
    );
  }

  get openStreams(): number {
    return this.streams.size;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Opens a stream with a request's header block (client role); returns its id. */
  open(fields: readonly string[], neverIndexed: readonly number[], endStream: boolean): number {
    const id = this.nextStreamId;
    this.nextStreamId += 2;
    this.lastStreamId = id;
    const stream = new EndpointStream(id, this.peer.initialWindow, DEFAULT_WINDOW);
    this.streams.set(id, stream);
    this.writeHeaders(stream, fields, neverIndexed, endStream);
    return id;
  }

  /** Sends a header block on an open stream: a response, 1xx, or trailers (after any DATA queued). */
  sendHeaders(
    id: number,
    fields: readonly string[],
    neverIndexed: readonly number[],
    endStream: boolean,
  ): void {
    const stream = this.streams.get(id);
    if (!stream || stream.localEnded) return;
    if (stream.queue.length > 0) {
      stream.trailers = { fields, neverIndexed };
      return;
    }
    this.writeHeaders(stream, fields, neverIndexed, endStream);
  }

  /**
   * Queues DATA on a stream; it leaves as the peer's windows allow, `onSent` told of each part that
   * did. DATA for a stream that is gone is dropped, its credit returned at once.
   */
  sendData(id: number, data: Buffer, endStream: boolean, onSent?: OnSent): void {
    const stream = this.streams.get(id);
    if (!stream || stream.localEnded || stream.ending) {
      if (data.length > 0) onSent?.(data.length);
      return;
    }
    stream.queue.push(new OutboundData(data, endStream, onSent));
    if (endStream) stream.ending = true;
    this.sender.flush(stream);
  }

  /** Resets a stream (both directions) with `code`. */
  reset(id: number, code: number): void {
    const stream = this.streams.get(id);
    if (!stream) return;
    this.forget(stream);
    this.write(rstStreamFrame(id, code));
  }

  /** Resets a stream with `code` once this side's END_STREAM on it is out, or now if it already is. */
  resetWhenSent(id: number, code: number): void {
    const stream = this.streams.get(id);
    if (!stream) return;
    if (stream.localEnded) this.reset(id, code);
    else stream.resetAfterEnd = code;
  }

  /** Returns flow-control credit for `n` octets of the peer's DATA on stream `id` that moved on. */
  consumed(id: number, n: number): void {
    if (n === 0 || this.closed) return;
    this.recvUnreturned += n;
    if (this.recvUnreturned >= CONNECTION_WINDOW / 2) {
      this.recvWindow += this.recvUnreturned;
      this.write(windowUpdateFrame(0, this.recvUnreturned));
      this.recvUnreturned = 0;
    }
    const stream = this.streams.get(id);
    if (!stream || stream.remoteEnded) return;
    stream.recvUnreturned += n;
    if (stream.recvUnreturned >= DEFAULT_WINDOW / 2) {
      stream.recvWindow += stream.recvUnreturned;
      this.write(windowUpdateFrame(id, stream.recvUnreturned));
      stream.recvUnreturned = 0;
    }
  }

  /** GOAWAY with NO_ERROR: streams already open finish, the connection ends after the last. */
  shutdown(): void {
    if (this.closed || this.goingAway) return;
    this.goingAway = true;
    this.write(goawayFrame(this.options.role === "server" ? this.lastStreamId : 0, ErrorCode.NO_ERROR));
    this.endIfIdle();
  }

  /** Ends the connection now with `code`, the streams on it cut. */
  abort(code: number, reason: string): void {
    this.fail(new ConnectionError(code, reason));
  }

  private onFrame(f: Frame): void {
    if (this.headerBlock.open && f.type !== FrameType.CONTINUATION)
      throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "a header block was interrupted by another frame");
    checkFrameShape(f);
    switch (f.type) {
      case FrameType.DATA:
        return this.onDataFrame(f);
      case FrameType.HEADERS:
        return this.onHeadersFrame(f);
      case FrameType.CONTINUATION:
        if (f.payload.length === 0 && (f.flags & Flag.END_HEADERS) === 0) this.idle();
        return this.onHeaderBlock(this.headerBlock.continue(f));
      case FrameType.PRIORITY:
        if (f.payload.length !== 5) this.streamError(f.streamId, ErrorCode.FRAME_SIZE_ERROR);
        else this.idle();
        return;
      case FrameType.RST_STREAM:
        return this.onRstStream(f);
      case FrameType.SETTINGS:
        return this.onSettings(f);
      case FrameType.PUSH_PROMISE:
        throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "PUSH_PROMISE, though push is disabled");
      case FrameType.PING:
        if ((f.flags & Flag.ACK) === 0) this.write(pingAck(f.payload));
        return;
      case FrameType.GOAWAY:
        return this.onGoaway(f);
      case FrameType.WINDOW_UPDATE:
        return this.onWindowUpdate(f);
      default:
        // Unknown frame types are ignored (RFC 9113 §4.1), within the budget for frames that do nothing.
        this.idle();
    }
  }

  private onDataFrame(f: Frame): void {
    const length = f.payload.length;
    if (length > this.recvWindow)
      throw new ConnectionError(ErrorCode.FLOW_CONTROL_ERROR, "DATA beyond the connection's window");
    this.recvWindow -= length;
    const stream = this.streams.get(f.streamId);
    if (!stream) {
      if (this.isIdle(f.streamId))
        throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "DATA on an idle stream");
      // A stream this side already closed: frames in flight still count against the connection.
      this.consumed(f.streamId, length);
      return;
    }
    if (stream.remoteEnded) {
      this.consumed(f.streamId, length);
      this.streamError(f.streamId, ErrorCode.STREAM_CLOSED);
      return;
    }
    if (length > stream.recvWindow) {
      this.consumed(f.streamId, length);
      this.streamError(f.streamId, ErrorCode.FLOW_CONTROL_ERROR);
      return;
    }
    stream.recvWindow -= length;
    const data = unpad(f, 0);
    const endStream = (f.flags & Flag.END_STREAM) !== 0;
    if (data.length === 0 && !endStream) this.idle();
    const padding = length - data.length;
    if (padding > 0) this.consumed(f.streamId, padding);
    if (endStream) stream.remoteEnded = true;
    this.events.onData(f.streamId, data, endStream);
    if (endStream) this.closeIfDone(stream);
  }

  private onHeadersFrame(f: Frame): void {
    const fragment = unpad(f, (f.flags & Flag.PRIORITY) !== 0 ? 5 : 0);
    this.onHeaderBlock(this.headerBlock.start(f.streamId, f.flags, fragment));
  }

  private onHeaderBlock(whole: WholeBlock | undefined): void {
    if (!whole) return;
    const { id, fragment, endStream } = whole;
    // Decoded whatever becomes of the stream: the dynamic table must follow every block.
    const block = this.decoder.decode(fragment);
    let stream = this.streams.get(id);
    if (!stream) {
      if (this.options.role === "client" || id % 2 === 0 || id <= this.lastStreamId) {
        if (this.isIdle(id))
          throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, `HEADERS opening stream ${id}`);
        return;
      }
      this.lastStreamId = id;
      if (this.goingAway || this.streams.size >= this.options.maxConcurrentStreams) {
        this.write(rstStreamFrame(id, ErrorCode.REFUSED_STREAM));
        return;
      }
      stream = new EndpointStream(id, this.peer.initialWindow, DEFAULT_WINDOW);
      this.streams.set(id, stream);
    } else if (stream.remoteEnded) {
      this.streamError(id, ErrorCode.STREAM_CLOSED);
      return;
    }
    if (endStream) stream.remoteEnded = true;
    this.events.onHeaders(id, block, endStream);
    if (endStream) this.closeIfDone(stream);
  }

  private onRstStream(f: Frame): void {
    if (this.isIdle(f.streamId))
      throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "RST_STREAM on an idle stream");
    const stream = this.streams.get(f.streamId);
    if (!stream) return;
    if (this.options.role === "server" && !this.resets.spend())
      throw new ConnectionError(ErrorCode.ENHANCE_YOUR_CALM, "too many streams reset");
    this.forget(stream);
    this.events.onReset(f.streamId, f.payload.readUInt32BE(0));
  }

  private onSettings(f: Frame): void {
    if ((f.flags & Flag.ACK) !== 0) return;
    const change = this.peer.apply(f.payload);
    if (change.headerTableSize !== undefined) this.encoder.setMaxTableSize(change.headerTableSize);
    if (change.windowDelta !== 0)
      for (const stream of this.streams.values()) {
        stream.sendWindow += change.windowDelta;
        if (stream.sendWindow > MAX_WINDOW)
          throw new ConnectionError(ErrorCode.FLOW_CONTROL_ERROR, "a stream's window above 2^31 - 1");
      }
    this.write(settingsAck());
    for (const stream of this.streams.values()) this.sender.flush(stream);
  }

  private onGoaway(f: Frame): void {
    const last = f.payload.readUInt32BE(0) & MAX_WINDOW;
    this.peerLastStreamId = Math.min(last, this.peerLastStreamId ?? last);
    this.events.onGoaway(this.peerLastStreamId, f.payload.readUInt32BE(4));
    this.endIfIdle();
  }

  private onWindowUpdate(f: Frame): void {
    const increment = f.payload.readUInt32BE(0) & MAX_WINDOW;
    if (f.streamId === 0) {
      if (increment === 0)
        throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "WINDOW_UPDATE of 0 on the connection");
      this.sender.grant(increment);
      return;
    }
    if (this.isIdle(f.streamId))
      throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "WINDOW_UPDATE on an idle stream");
    const stream = this.streams.get(f.streamId);
    if (!stream) return;
    if (increment === 0) return this.streamError(f.streamId, ErrorCode.PROTOCOL_ERROR);
    stream.sendWindow += increment;
    if (stream.sendWindow > MAX_WINDOW) return this.streamError(f.streamId, ErrorCode.FLOW_CONTROL_ERROR);
    this.sender.flush(stream);
  }

  private writeHeaders(
    stream: EndpointStream,
    fields: readonly string[],
    neverIndexed: readonly number[],
    endStream: boolean,
  ): void {
    this.write(
      headerFrames(stream.id, this.encoder.encode(fields, neverIndexed), endStream, this.peer.maxFrameSize),
    );
    if (endStream) {
      stream.localEnded = true;
      this.closeIfDone(stream);
    }
  }

  /** A stream's DATA all left: its trailers go now, or it may be done. */
  private emptied(stream: EndpointStream): void {
    if (stream.trailers) {
      const { fields, neverIndexed } = stream.trailers;
      stream.trailers = undefined;
      this.writeHeaders(stream, fields, neverIndexed, true);
      return;
    }
    this.closeIfDone(stream);
  }

  private closeIfDone(stream: EndpointStream): void {
    if (stream.localEnded && stream.resetAfterEnd !== undefined && this.streams.has(stream.id)) {
      this.reset(stream.id, stream.resetAfterEnd);
      this.endIfIdle();
      return;
    }
    if (stream.localEnded && stream.remoteEnded && stream.queue.length === 0) {
      this.forget(stream);
      this.endIfIdle();
    }
  }

  /** Drops a stream; DATA still queued on it returns its credit to the side it came from. */
  private forget(stream: EndpointStream): void {
    this.streams.delete(stream.id);
    this.sender.forget(stream);
    for (const d of stream.queue.splice(0)) if (d.data.length > 0) d.onSent?.(d.data.length);
  }

  /** A stream this side ends for a protocol fault; the relay hears of it as a reset. */
  private streamError(id: number, code: number): void {
    const stream = this.streams.get(id);
    this.write(rstStreamFrame(id, code));
    if (!stream) return;
    this.forget(stream);
    this.events.onReset(id, code);
  }

  /** A stream id above every one opened so far: no frame but HEADERS (or PRIORITY) may name it. */
  private isIdle(id: number): boolean {
    // Even ids would be server-initiated: push is disabled, so none is ever opened.
    return (
      id % 2 === 0 || (this.options.role === "client" ? id >= this.nextStreamId : id > this.lastStreamId)
    );
  }

  private idle(): void {
    if (!this.idleFrames.spend())
      throw new ConnectionError(ErrorCode.ENHANCE_YOUR_CALM, "too many frames that carry nothing");
  }

  private endIfIdle(): void {
    if ((this.goingAway || this.peerLastStreamId !== undefined) && this.streams.size === 0 && !this.closed) {
      this.closed = true;
      this.socket.end();
      this.events.onClose(undefined);
    }
  }

  private fail(err: ConnectionError, fault?: unknown): void {
    if (this.closed) return;
    this.write(goawayFrame(this.options.role === "server" ? this.lastStreamId : 0, err.code, err.message));
    this.closed = true;
    this.socket.destroySoon();
    this.events.onClose(err.message, fault);
  }

  private gone(reason: string | undefined): void {
    if (this.closed) return;
    this.closed = true;
    this.socket.destroy();
    this.events.onClose(reason ?? "the connection closed");
  }

  private write(chunk: Buffer): void {
    this.out.write(chunk);
  }
}
