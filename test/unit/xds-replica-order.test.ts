import { describe, expect, it } from "vitest";
import { ReplicaOrder } from "../../xds/replica-order.ts";

/** A seeded generator, so a spread is a property of the order and not of one lucky draw. */
function seeded(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

/** How many of `clients` draws landed on each replica. */
function tally(clients: number, draw: () => number): Map<number, number> {
  const counts = new Map<number, number>();
  for (let client = 0; client < clients; client++) {
    const replica = draw();
    counts.set(replica, (counts.get(replica) ?? 0) + 1);
  }
  return counts;
}

describe("ReplicaOrder", () => {
  it("starts on the replica asked for and visits every other once before coming back", () => {
    const order = new ReplicaOrder(5, 3, seeded(7));
    const visited = [order.current];
    for (let i = 0; i < 4; i++) visited.push(order.advance());
    expect(visited[0]).toBe(3);
    expect([...visited].sort()).toEqual([0, 1, 2, 3, 4]);
    expect(order.advance()).toBe(3);
  });

  it("spreads the clients of a lost replica over every survivor instead of moving them all to the next", () => {
    const random = seeded(42);
    const landed = tally(3000, () => new ReplicaOrder(4, 2, random).advance());
    expect(landed.get(2)).toBeUndefined();
    for (const survivor of [0, 1, 3]) expect(landed.get(survivor)).toBeGreaterThan(800);
  });

  it("starts clients on random replicas when none is asked for", () => {
    const random = seeded(1);
    const started = tally(3000, () => new ReplicaOrder(3, undefined, random).current);
    for (const replica of [0, 1, 2]) expect(started.get(replica)).toBeGreaterThan(800);
  });

  it("stays on the only replica there is", () => {
    const order = new ReplicaOrder(1);
    expect([order.current, order.advance(), order.advance()]).toEqual([0, 0, 0]);
  });

  it("refuses a count that is not a positive integer", () => {
    expect(() => new ReplicaOrder(0)).toThrow(/replica count 0/);
    expect(() => new ReplicaOrder(1.5)).toThrow(/positive integer/);
  });
});
