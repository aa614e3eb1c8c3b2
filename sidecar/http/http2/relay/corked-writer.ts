import type { Socket } from "node:net";

/** Octets waiting in the socket for a peer that does not read, past which the connection is cut. */
const MAX_UNREAD = 4 << 20;

/**
 * Writes frames to a socket corked until the event loop has run this round's I/O callbacks, so the
 * frames that the reads of one round produce leave in one write. A TLS socket hands each record it
 * decrypts to its own callback, with the next-tick queue run in between: uncorking there sent a
 * response's trailers, which came in a record of their own, in a second system call and TLS record.
 * A peer that stops reading while this side keeps answering it (PINGs, SETTINGS) cannot make the
 * socket buffer grow without bound: past MAX_UNREAD `onOverflow` ends the connection.
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
      setImmediate(() => {
        this.corked = false;
        socket.uncork();
      });
    }
    socket.write(chunk);
    if (socket.writableLength > MAX_UNREAD) this.onOverflow();
  }
}
