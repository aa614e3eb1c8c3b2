import type { Duplex } from "node:stream";

export interface SpliceTotals {
  /** Bytes read from `a` and written to `b`. */
  readonly aToB: number;
  readonly bToA: number;
}

type SocketLike = Duplex & { destroySoon?: () => void };

/**
 * Joins two byte streams in both directions with half-close: an end from one side becomes an end
 * (FIN) towards the other while the opposite direction keeps flowing. An error on either side tears
 * down both. `onDone` runs once, after both have closed. `headA` is delivered to `b` first.
 */
export function splice(
  a: SocketLike,
  b: SocketLike,
  onDone: (totals: SpliceTotals) => void,
  headA?: Buffer,
): void {
  let aToB = headA?.length ?? 0;
  let bToA = 0;
  let closed = 0;
  const closeOne = (other: SocketLike) => (): void => {
    // Whatever the closed side still had to send is already written; let the other flush and go.
    if (other.destroySoon) other.destroySoon();
    else other.end();
    if (++closed === 2) onDone({ aToB, bToA });
  };
  a.on("data", (chunk: Buffer) => {
    aToB += chunk.length;
  });
  b.on("data", (chunk: Buffer) => {
    bToA += chunk.length;
  });
  a.on("error", () => b.destroy());
  b.on("error", () => a.destroy());
  a.once("close", closeOne(b));
  b.once("close", closeOne(a));
  if (headA && headA.length > 0) b.write(headA);
  a.pipe(b);
  b.pipe(a);
}
