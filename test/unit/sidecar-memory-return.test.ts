import { execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { nativeAvailable } from "../../native/index.ts";
import { load } from "../../native/load.ts";
import type { MemoryReturnClock } from "../../sidecar/proxy/memory-return.ts";
import { MemoryReturn } from "../../sidecar/proxy/memory-return.ts";

/**
 * After a burst of connections the C heap's freed memory is returned to the system once, when the
 * burst is over; never in the middle of one, and never more often than the interval allows.
 */

const SETTINGS = { afterClosed: 10, belowPeakShare: 0.25, intervalMs: 1_000 };

/** A clock the test moves by hand, with its pending timers. */
class ManualClock implements MemoryReturnClock {
  private t = 0;
  private timers: { at: number; fn: () => void }[] = [];
  now(): number {
    return this.t;
  }
  after(ms: number, fn: () => void): () => void {
    const timer = { at: this.t + ms, fn };
    this.timers.push(timer);
    return () => {
      this.timers = this.timers.filter((x) => x !== timer);
    };
  }
  get pending(): number {
    return this.timers.length;
  }
  advance(ms: number): void {
    this.t += ms;
    const due = this.timers.filter((x) => x.at <= this.t);
    this.timers = this.timers.filter((x) => x.at > this.t);
    for (const x of due) x.fn();
  }
}

function setup(): {
  mr: MemoryReturn;
  clock: ManualClock;
  open: (n: number) => void;
  close: (n: number) => void;
} {
  const clock = new ManualClock();
  let openNow = 0;
  const mr = new MemoryReturn(
    () => openNow,
    () => true,
    SETTINGS,
    clock,
  );
  return {
    mr,
    clock,
    open: (n) => {
      for (let i = 0; i < n; i++) {
        openNow++;
        mr.opened();
      }
    },
    close: (n) => {
      for (let i = 0; i < n; i++) {
        openNow--;
        mr.closed();
      }
    },
  };
}

describe("returning memory after a burst of connections", () => {
  it("returns once when the burst has closed and the interval has passed", () => {
    const { mr, clock, open, close } = setup();
    clock.advance(SETTINGS.intervalMs);
    open(40);
    close(40);
    expect(mr.stats.returns).toBe(1);
  });

  it("waits while most of the burst is still open, and returns once it has closed", () => {
    const { mr, clock, open, close } = setup();
    clock.advance(SETTINGS.intervalMs);
    open(40);
    close(20); // 20 of a peak of 40 still open: the burst goes on
    expect(mr.stats.returns).toBe(0);
    clock.advance(SETTINGS.intervalMs);
    expect(mr.stats.returns).toBe(0);
    close(15); // 5 of 40 open
    clock.advance(SETTINGS.intervalMs);
    expect(mr.stats.returns).toBe(1);
  });

  it("does not return more often than the interval, whatever the churn", () => {
    const { mr, clock, open, close } = setup();
    clock.advance(SETTINGS.intervalMs);
    for (let burst = 0; burst < 5; burst++) {
      open(40);
      close(40);
    }
    expect(mr.stats.returns).toBe(1);
    expect(clock.pending).toBe(1);
    clock.advance(SETTINGS.intervalMs);
    expect(mr.stats.returns).toBe(2);
    expect(clock.pending).toBe(0);
  });

  it("never returns for a few closed connections", () => {
    const { mr, clock, open, close } = setup();
    clock.advance(10 * SETTINGS.intervalMs);
    open(SETTINGS.afterClosed - 1);
    close(SETTINGS.afterClosed - 1);
    clock.advance(10 * SETTINGS.intervalMs);
    expect(mr.stats.returns).toBe(0);
    expect(clock.pending).toBe(0);
  });

  it("stop cancels a pending check", () => {
    const { mr, clock, open, close } = setup();
    open(40);
    close(40);
    expect(clock.pending).toBe(1);
    mr.stop();
    expect(clock.pending).toBe(0);
  });
});

// An addon built before releaseFreeMemory existed (a stale native/build) has nothing to test.
describe.runIf(nativeAvailable() && load().releaseFreeMemory !== undefined)("releaseFreeMemory", () => {
  it("gives freed C heap memory back: the resident set falls after a fragmented free", () => {
    // In a fresh process: 20,000 malloc'd 4 KB buffers, every 16th kept, the rest freed by a GC.
    // glibc keeps the freed ~70 MB resident (the kept buffers pin the arena's top) until released.
    const addon = fileURLToPath(new URL("../../native/build/Release/sigil_native.node", import.meta.url));
    const script = `
      const native = require(${JSON.stringify(addon)});
      const fs = require("node:fs");
      const anonMb = () => Number(/RssAnon:\\s+(\\d+)/.exec(fs.readFileSync("/proc/self/status", "utf8"))[1]) / 1024;
      const kept = [];
      let all = [];
      for (let i = 0; i < 20000; i++) {
        const b = Buffer.allocUnsafeSlow(4000).fill(1);
        all.push(b);
        if (i % 16 === 0) kept.push(b);
      }
      all = null;
      gc(); gc();
      setImmediate(() => {
        gc();
        const before = anonMb();
        const released = native.releaseFreeMemory();
        process.stdout.write(JSON.stringify({ before, after: anonMb(), released, kept: kept.length }));
      });`;
    const out = JSON.parse(
      execFileSync(process.execPath, ["--expose-gc", "--single-threaded-gc", "-e", script]).toString(),
    ) as { before: number; after: number; released: boolean };
    expect(out.released).toBe(true);
    expect(out.before - out.after).toBeGreaterThan(40);
  });
});
