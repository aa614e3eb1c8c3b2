/**
 * The fast path's counters as the sidecar's `/stats/prometheus` shows them (registerFastPathMetrics):
 * every family read from one stats snapshot per scrape, per-queue packet counts, handshake outcomes
 * and refusal reasons. No namespaces needed: the stats come from a fixed snapshot.
 */
import { Registry } from "prom-client";
import { describe, expect, it } from "vitest";
import { registerFastPathMetrics } from "../../sidecar/agent/fast-path-metrics.ts";
import type { EnforcerStats } from "../../sidecar/fastpath/enforcer.ts";

function snapshot(synAccepted: number): EnforcerStats {
  const queue = (n: number, received: number) => ({
    queue: n,
    received,
    accepted: received,
    dropped: 0,
    repeated: 0,
    modified: 0,
    overruns: 0,
    receiveErrors: 0,
    callbackErrors: 0,
    verdictErrors: 0,
  });
  // Only the counters the metrics read; the enforcer keeps more (timings) that are not exported.
  const counters = {
    synSigned: 3,
    synAccepted,
    synDenied: 2,
    synAckSigned: synAccepted,
    synAckAccepted: 3,
    synAckRefused: 1,
    rejections: { policy: 2, replayed: 1 },
    warm: {
      ourSyn: { handled: 7, handedToJs: 1, decideUs: 0, verdictUs: 0 },
      peerSyn: { handled: 6, handedToJs: 2, decideUs: 0, verdictUs: 0 },
      ourSynAck: { handled: 6, handedToJs: 2, decideUs: 0, verdictUs: 0 },
      peerSynAck: { handled: 7, handedToJs: 1, decideUs: 0, verdictUs: 0 },
    },
  } as unknown as EnforcerStats["counters"];
  return {
    queues: [queue(4200, 6), queue(4201, 4)],
    counters,
    identityCache: { size: 1, hits: 0, misses: 1 },
  };
}

describe("fast-path metrics on the sidecar registry", () => {
  it("exports queue, handshake and refusal counters from one snapshot per scrape", async () => {
    const registry = new Registry();
    let calls = 0;
    registerFastPathMetrics(registry, {
      stats: () => {
        calls++;
        return Promise.resolve(snapshot(5));
      },
      kernelQueues: (queues) =>
        Promise.resolve(
          queues.map((queue) => ({ queue, waiting: 0, droppedFull: queue - 4190, droppedUnread: 1 })),
        ),
      failOpen: false,
    });
    const text = await registry.metrics();
    expect(calls).toBe(1);
    expect(text).toContain('sigil_fastpath_queued_packets_total{queue="4200"} 6');
    expect(text).toContain('sigil_fastpath_queued_packets_total{queue="4201"} 4');
    expect(text).toContain('sigil_fastpath_handshakes_total{kind="syn",outcome="accepted"} 5');
    expect(text).toContain('sigil_fastpath_handshakes_total{kind="syn",outcome="denied"} 2');
    expect(text).toContain('sigil_fastpath_handshakes_total{kind="syn_ack",outcome="refused"} 1');
    expect(text).toContain('sigil_fastpath_rejections_total{reason="policy"} 2');
    expect(text).toContain('sigil_fastpath_rejections_total{reason="replayed"} 1');
    expect(text).toContain('sigil_fastpath_decided_packets_total{kind="peerSyn",by="native"} 6');
    expect(text).toContain('sigil_fastpath_decided_packets_total{kind="peerSyn",by="js"} 2');
    expect(text).toContain('sigil_fastpath_kernel_dropped_packets_total{queue="4200",cause="full"} 10');
    expect(text).toContain('sigil_fastpath_kernel_dropped_packets_total{queue="4201",cause="unread"} 1');
    expect(text).toContain("sigil_fastpath_fail_open 0");
    // Running totals are counters (rate() works on them); only the fail-open switch is a gauge.
    for (const family of [
      "queued_packets",
      "handshakes",
      "rejections",
      "decided_packets",
      "kernel_dropped_packets",
    ])
      expect(text).toContain(`# TYPE sigil_fastpath_${family}_total counter`);
    expect(text).toContain("# TYPE sigil_fastpath_fail_open gauge");
  });

  it("says on every scrape that the operator chose fail-open", async () => {
    const registry = new Registry();
    registerFastPathMetrics(registry, {
      stats: () => Promise.resolve(snapshot(1)),
      kernelQueues: () => Promise.resolve([]),
      failOpen: true,
    });
    expect(await registry.metrics()).toContain("sigil_fastpath_fail_open 1");
  });

  it("reads fresh figures at every scrape", async () => {
    const registry = new Registry();
    let accepted = 1;
    registerFastPathMetrics(registry, {
      stats: () => Promise.resolve(snapshot(accepted)),
      kernelQueues: () => Promise.resolve([]),
      failOpen: false,
    });
    expect(await registry.metrics()).toContain(
      'sigil_fastpath_handshakes_total{kind="syn",outcome="accepted"} 1',
    );
    accepted = 9;
    expect(await registry.metrics()).toContain(
      'sigil_fastpath_handshakes_total{kind="syn",outcome="accepted"} 9',
    );
  });
});
