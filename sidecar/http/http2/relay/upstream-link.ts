import type { Socket } from "node:net";
import type { HeaderBlock } from "../hpack/decoder.ts";
import type { EndpointEvents } from "./endpoint.ts";
import { ErrorCode } from "../frames/frame.ts";
import { Endpoint } from "./endpoint.ts";
import type { OnSent } from "./endpoint-stream.ts";
import type { RelayStream, StreamLink } from "./relay-stream.ts";

/** What a link reports about the streams it carries, already mapped back to the relay's streams. */
export interface LinkEvents {
  onHeaders(stream: RelayStream, block: HeaderBlock, endStream: boolean): void;
  onData(stream: RelayStream, data: Buffer, endStream: boolean): void;
  onReset(stream: RelayStream, code: number): void;
  /** The stream is open upstream: what it held back may follow. */
  onOpened(stream: RelayStream): void;
  /** The stream was never processed upstream (above a GOAWAY's last id) or its connection ended. */
  onLost(stream: RelayStream, reason: string): void;
  /** This side failed on something it did not expect (a defect); the connection was ended. */
  onFault(err: unknown): void;
  /** The link takes no new streams; the relay opens another for the next ones. */
  onRetired(link: UpstreamLink): void;
}

/**
 * One upstream HTTP/2 connection of a relay: the streams forwarded on it by their upstream ids, and
 * the allowed streams waiting for it to connect or for a free stream under its peer's limit.
 */
export class UpstreamLink implements StreamLink {
  private endpoint: Endpoint | undefined;
  private readonly byUpId = new Map<number, RelayStream>();
  private readonly waiting: { stream: RelayStream; fields: string[]; neverIndexed: number[] }[] = [];
  private retired = false;

  constructor(private readonly events: LinkEvents) {}

  /** Takes the connected socket; the streams that waited are opened in the order they were allowed. */
  connected(socket: Socket, options: { maxHeaderListBytes: number; now: () => number }): void {
    const handlers: EndpointEvents = {
      onHeaders: (id, block, end) => this.with(id, (s) => this.events.onHeaders(s, block, end)),
      onData: (id, data, end) => this.with(id, (s) => this.events.onData(s, data, end)),
      onReset: (id, code) => this.with(id, (s) => this.release(s) && this.events.onReset(s, code)),
      onGoaway: (last) => this.goaway(last),
      onClose: (reason, fault) => {
        if (fault) this.events.onFault(fault);
        this.closed(reason ?? "the upstream connection closed");
      },
    };
    this.endpoint = new Endpoint(
      socket,
      {
        role: "client",
        maxHeaderListBytes: options.maxHeaderListBytes,
        maxConcurrentStreams: 0,
        now: options.now,
      },
      handlers,
    );
    this.openWaiting();
  }

  /** The connection could not be made: every waiting stream is lost with `reason`. */
  failed(reason: string): void {
    this.retire();
    for (const w of this.waiting.splice(0)) this.events.onLost(w.stream, reason);
  }

  get isRetired(): boolean {
    return this.retired;
  }

  /** Opens an allowed stream now, or once the connection is up and has room. */
  open(stream: RelayStream, fields: string[], neverIndexed: number[]): void {
    stream.link = this;
    stream.phase = "opening";
    this.waiting.push({ stream, fields, neverIndexed });
    this.openWaiting();
  }

  sendData(stream: RelayStream, data: Buffer, end: boolean, onSent: OnSent): void {
    if (this.endpoint) this.endpoint.sendData(stream.upId, data, end, onSent);
    else onSent(data.length);
  }

  sendTrailers(stream: RelayStream, fields: string[], neverIndexed: number[]): void {
    this.endpoint?.sendHeaders(stream.upId, fields, neverIndexed, true);
  }

  /** The credit callback for response DATA of a stream: returned on this connection whatever became of the stream. */
  creditFor(upId: number): OnSent {
    return (n) => this.endpoint?.consumed(upId, n);
  }

  /** Resets a forwarded stream upstream, or forgets one still waiting to open. */
  reset(stream: RelayStream, code: number): void {
    const i = this.waiting.findIndex((w) => w.stream === stream);
    if (i >= 0) {
      this.waiting.splice(i, 1);
      return;
    }
    if (!this.release(stream)) return;
    this.endpoint?.reset(stream.upId, code);
    this.endIfUnused();
  }

  /** Stops the link taking new streams; it closes once its last stream is done. */
  retire(): void {
    if (this.retired) return;
    this.retired = true;
    this.events.onRetired(this);
    this.endIfUnused();
  }

  /** Forgets a finished stream; the connection ends with its last stream once retired. */
  finished(stream: RelayStream): void {
    if (this.release(stream)) this.endIfUnused();
  }

  /** Cuts the connection (revoked upstream, the downstream gone). */
  destroy(reason: string): void {
    this.retire();
    this.endpoint?.abort(ErrorCode.CANCEL, reason);
  }

  private openWaiting(): void {
    const endpoint = this.endpoint;
    if (!endpoint) return;
    while (this.waiting.length > 0 && endpoint.canOpen()) {
      const { stream, fields, neverIndexed } = this.waiting.shift() as (typeof this.waiting)[number];
      const end = stream.requestEnded && stream.pending.length === 0;
      stream.upId = endpoint.open(fields, neverIndexed, end);
      stream.phase = "forwarded";
      this.byUpId.set(stream.upId, stream);
      this.events.onOpened(stream);
    }
    if (this.waiting.length > 0 && (endpoint.isClosed || endpoint.peerLastStreamId !== undefined)) {
      for (const w of this.waiting.splice(0))
        this.events.onLost(w.stream, "the upstream connection is closing");
    }
  }

  private with(id: number, f: (s: RelayStream) => unknown): void {
    const s = this.byUpId.get(id);
    if (s) f(s);
  }

  private release(stream: RelayStream): boolean {
    if (this.byUpId.get(stream.upId) !== stream) return false;
    this.byUpId.delete(stream.upId);
    this.openWaiting();
    return true;
  }

  private goaway(last: number): void {
    this.retire();
    for (const [id, s] of [...this.byUpId]) {
      if (id <= last) continue;
      this.byUpId.delete(id);
      this.events.onLost(s, "the upstream refused the stream (GOAWAY)");
    }
    this.openWaiting();
  }

  private closed(reason: string): void {
    this.retire();
    const lost = [...this.byUpId.values(), ...this.waiting.splice(0).map((w) => w.stream)];
    this.byUpId.clear();
    for (const s of lost) this.events.onLost(s, reason);
  }

  private endIfUnused(): void {
    if (this.retired && this.byUpId.size === 0 && this.waiting.length === 0) this.endpoint?.shutdown();
  }
}
