import type { Frame } from "../frames/frame-reader.ts";
import { ErrorCode, Flag } from "../frames/frame.ts";
import { ConnectionError } from "./connection-error.ts";

/** A header block made whole: its stream, its HPACK octets, whether it ends the stream. */
export interface WholeBlock {
  readonly id: number;
  readonly fragment: Buffer;
  readonly endStream: boolean;
}

/**
 * Joins HEADERS and its CONTINUATION frames into one header block. A block larger than the header
 * list it may decode to is refused as it grows, before it is held whole.
 */
export class HeaderBlockAssembler {
  private pending: { id: number; endStream: boolean; parts: Buffer[]; bytes: number } | undefined;

  constructor(private readonly maxBytes: number) {}

  /** Whether a block waits for CONTINUATION: no other frame may come before it ends. */
  get open(): boolean {
    return this.pending !== undefined;
  }

  /** A HEADERS fragment; the block when END_HEADERS closes it at once. */
  start(id: number, flags: number, fragment: Buffer): WholeBlock | undefined {
    const endStream = (flags & Flag.END_STREAM) !== 0;
    this.check(fragment.length);
    if ((flags & Flag.END_HEADERS) !== 0) return { id, fragment, endStream };
    // Copied: the frame's payload is a view of a receive buffer that is reused.
    this.pending = { id, endStream, parts: [Buffer.from(fragment)], bytes: fragment.length };
    return undefined;
  }

  /** A CONTINUATION frame; the block once END_HEADERS closes it. */
  continue(f: Frame): WholeBlock | undefined {
    const block = this.pending;
    if (!block || block.id !== f.streamId)
      throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "CONTINUATION without a header block to continue");
    block.parts.push(Buffer.from(f.payload));
    block.bytes += f.payload.length;
    this.check(block.bytes);
    if ((f.flags & Flag.END_HEADERS) === 0) return undefined;
    this.pending = undefined;
    return {
      id: block.id,
      fragment: Buffer.concat(block.parts, block.bytes),
      endStream: block.endStream,
    };
  }

  private check(bytes: number): void {
    if (bytes > this.maxBytes)
      throw new ConnectionError(
        ErrorCode.ENHANCE_YOUR_CALM,
        `header block of more than ${this.maxBytes} octets`,
      );
  }
}
