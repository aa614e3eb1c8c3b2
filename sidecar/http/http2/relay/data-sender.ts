import { DEFAULT_WINDOW, ErrorCode, MAX_WINDOW, dataHeader } from "../frames/frame.ts";
import { ConnectionError } from "./connection-error.ts";
import type { CorkedWriter } from "./corked-writer.ts";
import type { EndpointStream, OutboundData } from "./endpoint-stream.ts";
import type { PeerSettings } from "./peer-settings.ts";

/** Socket buffer above which DATA waits for `drain`. */
const HIGH_WATER = 64 << 10;

/**
 * Sends streams' queued DATA as the peer's windows and the socket allow. A stream that can send no
 * more waits in `blocked` until a WINDOW_UPDATE or the socket's drain lets it go on; each part that
 * leaves is reported to its `onSent`, which returns the credit to the side the bytes came from.
 */
export class DataSender {
  /** The connection's send window, as the peer granted it. */
  private window = DEFAULT_WINDOW;
  private readonly blocked = new Set<EndpointStream>();
  private waitingDrain = false;

  constructor(
    private readonly out: CorkedWriter,
    private readonly peer: PeerSettings,
    private readonly isOpen: () => boolean,
    /** Called once a stream's queue is empty: its trailers may go, or it may be done. */
    private readonly onEmptied: (stream: EndpointStream) => void,
  ) {}

  /** A WINDOW_UPDATE on stream 0. */
  grant(increment: number): void {
    this.window += increment;
    if (this.window > MAX_WINDOW)
      throw new ConnectionError(ErrorCode.FLOW_CONTROL_ERROR, "the connection's window above 2^31 - 1");
    this.retry();
  }

  /** The socket drained below its high-water mark. */
  drained(): void {
    this.waitingDrain = false;
    this.retry();
  }

  forget(stream: EndpointStream): void {
    this.blocked.delete(stream);
  }

  flush(stream: EndpointStream): void {
    while (stream.queue.length > 0 && this.isOpen()) {
      const head = stream.queue[0] as OutboundData;
      const n = Math.min(head.data.length, stream.sendWindow, this.window, this.peer.maxFrameSize);
      if ((n <= 0 && head.data.length > 0) || this.waitingDrain) {
        this.blocked.add(stream);
        return;
      }
      const last = n === head.data.length;
      const end = last && head.endStream;
      this.out.write(dataHeader(stream.id, n, end));
      if (n > 0) this.out.write(last && head.offset === 0 ? head.data : head.data.subarray(0, n));
      stream.sendWindow -= n;
      this.window -= n;
      if (last) stream.queue.shift();
      else head.advance(n);
      if (n > 0) head.onSent?.(n);
      if (end) stream.localEnded = true;
      if (this.out.buffered > HIGH_WATER) this.waitingDrain = true;
    }
    this.blocked.delete(stream);
    this.onEmptied(stream);
  }

  private retry(): void {
    for (const stream of [...this.blocked]) this.flush(stream);
  }
}
