import type { Socket } from "node:net";

/** Octets waiting in the socket for a peer that does not read, past which the connection is cut. */
const MAX_UNREAD = 4 << 20;

/**
 * Writes frames to a socket corked until the current tick ends, so the frames one read produces
 * leave in one write. A peer that stops reading while this side keeps answering it (PINGs, SETTINGS)
 * cannot make the socket buffer grow without bound: past MAX_UNREAD `onOverflow` ends the connection.
 */
export class CorkedWriter {
  private corked = false;

  constructor(
    private readonly socket: Socket,
    private readonly onOverflow: () => void,
  ) {}

  get buffered(): number {
    return this.socket.writableLength;
  }

  write(chunk: Buffer): void {
    const socket = this.socket;
    if (socket.destroyed || socket.writableEnded) return;
    if (!this.corked) {
      this.corked = true;
      socket.cork();
      process.nextTick(() => {
        this.corked = false;
        socket.uncork();
      });
    }
    socket.write(chunk);
    if (socket.writableLength > MAX_UNREAD) this.onOverflow();
  }
}
