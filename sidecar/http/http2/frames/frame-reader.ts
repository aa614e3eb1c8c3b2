import { FRAME_HEADER_BYTES, MAX_WINDOW, PREFACE } from "./frame.ts";

/** One frame as read: its payload is a view of the bytes received, not a copy. */
export interface Frame {
  readonly type: number;
  readonly flags: number;
  readonly streamId: number;
  readonly payload: Buffer;
}

/** Why the byte stream is not HTTP/2: the connection ends with the code (RFC 9113 §5.4.1). */
export interface FrameReadError {
  readonly code: "preface" | "frame size";
  readonly message: string;
}

/**
 * Cuts a connection's bytes into frames. A server-side reader first checks the client preface.
 * Frames longer than the size this side announced are refused before their payload is buffered,
 * so a peer cannot make the reader hold more than one frame.
 */
export class FrameReader {
  private pending: Buffer | undefined;
  private prefaceLeft: number;

  constructor(
    private maxFrameSize: number,
    expectPreface: boolean,
  ) {
    this.prefaceLeft = expectPreface ? PREFACE.length : 0;
  }

  /** Raises the largest frame accepted, once the peer acknowledged a larger SETTINGS_MAX_FRAME_SIZE. */
  setMaxFrameSize(size: number): void {
    this.maxFrameSize = size;
  }

  /**
   * Feeds received bytes; calls `onFrame` per whole frame, until one returns false (the connection is
   * ending). Returns an error, after which the reader is done.
   */
  push(chunk: Buffer, onFrame: (frame: Frame) => boolean | void): FrameReadError | undefined {
    const data = this.pending === undefined ? chunk : Buffer.concat([this.pending, chunk]);
    this.pending = undefined;
    let at = 0;
    if (this.prefaceLeft > 0) {
      const n = Math.min(this.prefaceLeft, data.length);
      const offset = PREFACE.length - this.prefaceLeft;
      if (data.compare(PREFACE, offset, offset + n, 0, n) !== 0)
        return { code: "preface", message: "the connection did not start with the HTTP/2 client preface" };
      this.prefaceLeft -= n;
      at = n;
    }
    while (data.length - at >= FRAME_HEADER_BYTES) {
      const length =
        ((data[at] as number) << 16) | ((data[at + 1] as number) << 8) | (data[at + 2] as number);
      if (length > this.maxFrameSize)
        return {
          code: "frame size",
          message: `frame of ${length} octets, above the ${this.maxFrameSize} allowed`,
        };
      const end = at + FRAME_HEADER_BYTES + length;
      if (end > data.length) break;
      const stop = onFrame({
        type: data[at + 3] as number,
        flags: data[at + 4] as number,
        streamId: data.readUInt32BE(at + 5) & MAX_WINDOW,
        payload: data.subarray(at + FRAME_HEADER_BYTES, end),
      });
      at = end;
      if (stop === false) return undefined;
    }
    if (at < data.length) this.pending = at === 0 ? data : Buffer.from(data.subarray(at));
    return undefined;
  }
}
