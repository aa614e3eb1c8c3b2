import net from "node:net";
import type { Frame } from "../../sidecar/http/http2/frames/frame-reader.ts";
import { FrameReader } from "../../sidecar/http/http2/frames/frame-reader.ts";
import { FrameType, PREFACE, frame, settingsFrame } from "../../sidecar/http/http2/frames/frame.ts";
import { HpackDecoder } from "../../sidecar/http/http2/hpack/decoder.ts";
import { HpackEncoder } from "../../sidecar/http/http2/hpack/encoder.ts";

/** What the server said on one stream, or how it ended the connection. */
export interface RawEvent {
  readonly type: number;
  readonly flags: number;
  readonly streamId: number;
  /** HEADERS: the decoded fields; RST_STREAM and GOAWAY: the error code; DATA: the text. */
  readonly fields?: string[];
  readonly code?: number;
  readonly text?: string;
}

/**
 * An HTTP/2 client that writes whatever frames a test gives it, valid or not, and reads back what
 * the server answers, header blocks decoded: for attacks a well-behaved client library refuses to send.
 */
export class RawH2Client {
  readonly encoder = new HpackEncoder();
  private readonly decoder = new HpackDecoder({ maxTableSize: 4096, maxListSize: 1 << 20 });
  private readonly reader = new FrameReader(1 << 24, false);
  private readonly events: RawEvent[] = [];
  private waiters: { match: (e: RawEvent) => boolean; resolve: (e: RawEvent) => void }[] = [];
  private closedWaiters: (() => void)[] = [];
  closed = false;

  private constructor(private readonly socket: net.Socket) {
    socket.on("data", (chunk: Buffer) => {
      this.reader.push(chunk, (f) => this.onFrame(f));
    });
    socket.on("error", () => undefined);
    socket.on("close", () => {
      this.closed = true;
      for (const w of this.closedWaiters.splice(0)) w();
    });
  }

  static async connect(port: number): Promise<RawH2Client> {
    const socket = net.connect({ host: "127.0.0.1", port });
    await new Promise<void>((resolve, reject) => {
      socket.once("connect", resolve);
      socket.once("error", reject);
    });
    const client = new RawH2Client(socket);
    client.write(PREFACE, settingsFrame([]));
    return client;
  }

  write(...chunks: Buffer[]): void {
    this.socket.write(Buffer.concat(chunks));
  }

  /**
   * Writes `chunk` up to `times` times, waiting for the socket to drain between writes, until the
   * server closes the connection; returns how many writes went out.
   */
  async writeUntilClosed(chunk: Buffer, times: number): Promise<number> {
    for (let i = 0; i < times; i++) {
      if (this.closed || this.socket.destroyed) return i;
      if (!this.socket.write(chunk))
        await new Promise<void>((resolve) => {
          const done = (): void => {
            this.socket.off("drain", done);
            this.socket.off("close", done);
            resolve();
          };
          this.socket.on("drain", done);
          this.socket.on("close", done);
        });
    }
    return times;
  }

  /** Stops reading what the server sends: its answers pile up in its own socket buffer. */
  stopReading(): void {
    this.socket.pause();
  }

  /** A HEADERS frame (END_HEADERS set) carrying `fields`, names and values alternating. */
  headers(streamId: number, fields: string[], flags = 0x4): Buffer {
    return frame(FrameType.HEADERS, flags, streamId, Buffer.from(this.encoder.encode(fields)));
  }

  request(streamId: number, path: string, extra: string[] = [], end = true): Buffer {
    const fields = [":method", "GET", ":scheme", "http", ":path", path, ":authority", "app.test", ...extra];
    return this.headers(streamId, fields, 0x4 | (end ? 0x1 : 0));
  }

  /** Resolves with the first event (seen already or to come) that `match` accepts. */
  next(match: (e: RawEvent) => boolean): Promise<RawEvent> {
    const seen = this.events.find(match);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve) => this.waiters.push({ match, resolve }));
  }

  response(streamId: number): Promise<RawEvent> {
    return this.next(
      (e) => e.streamId === streamId && (e.type === FrameType.HEADERS || e.type === FrameType.RST_STREAM),
    );
  }

  goaway(): Promise<RawEvent> {
    return this.next((e) => e.type === FrameType.GOAWAY);
  }

  whenClosed(): Promise<void> {
    return this.closed ? Promise.resolve() : new Promise((resolve) => this.closedWaiters.push(resolve));
  }

  close(): void {
    this.socket.destroy();
  }

  private onFrame(f: Frame): void {
    let event: RawEvent = { type: f.type, flags: f.flags, streamId: f.streamId };
    if (f.type === FrameType.HEADERS) event = { ...event, fields: this.decoder.decode(f.payload).fields };
    else if (f.type === FrameType.RST_STREAM) event = { ...event, code: f.payload.readUInt32BE(0) };
    else if (f.type === FrameType.GOAWAY)
      event = { ...event, code: f.payload.readUInt32BE(4), text: f.payload.subarray(8).toString() };
    else if (f.type === FrameType.DATA) event = { ...event, text: f.payload.toString() };
    this.events.push(event);
    const [hit, rest] = [
      this.waiters.filter((w) => w.match(event)),
      this.waiters.filter((w) => !w.match(event)),
    ];
    this.waiters = rest;
    for (const w of hit) w.resolve(event);
  }
}
