import type { Socket } from "node:net";

/**
 * Relays both directions between two sockets as they are: every chunk read on one is written to the
 * other, reading pauses while the other side's buffer is full, an end is passed on and an error or
 * close tears both down. The whole data path of the bare Node pipes that stand for the floor of a
 * Node proxy (`node-pipes.ts`, `../sidecar/tls-pipe-pair.ts`). `open` holds the sockets alive, so
 * that whoever stops the pipes can destroy them.
 */
export function relayBytes(a: Socket, b: Socket, open: Set<Socket>): void {
  open.add(a).add(b);
  a.setNoDelay(true);
  b.setNoDelay(true);
  const oneWay = (from: Socket, to: Socket): void => {
    from.on("data", (chunk: Buffer) => {
      if (!to.write(chunk)) from.pause();
    });
    to.on("drain", () => from.resume());
    from.on("end", () => to.end());
  };
  oneWay(a, b);
  oneWay(b, a);
  const done = (): void => {
    a.destroy();
    b.destroy();
    open.delete(a);
    open.delete(b);
  };
  a.on("error", done).on("close", done);
  b.on("error", done).on("close", done);
}
