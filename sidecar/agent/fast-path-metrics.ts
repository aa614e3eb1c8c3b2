/**
 * The L4 fast path's counters on the sidecar's Prometheus registry (`/stats/prometheus`). Apart from
 * fast-path.ts so it loads without the worker pool (which resolves its thread loader at import time).
 */
import { Counter, Gauge } from "prom-client";
import type { Registry } from "prom-client";
import type { EnforcerStats } from "../fastpath/enforcer.ts";
import type { KernelQueueCounters } from "../fastpath/kernel-queues.ts";

export interface FastPathMetricSources {
  readonly stats: () => Promise<EnforcerStats>;
  /** The kernel's counters of the same queues (handshakes dropped before the enforcer saw them). */
  readonly kernelQueues: (queues: readonly number[]) => Promise<readonly KernelQueueCounters[]>;
  /** The operator chose fail-open (`--queue-bypass`): said on every scrape, not only in a start-up log. */
  readonly failOpen: boolean;
}

/**
 * Registers the fast path's counters on `registry`, read from `stats` at each scrape (they are the
 * enforcer's and the kernel's running totals, so each scrape resets the exported series and adds
 * the totals back, after the await so two scrapes cannot interleave; one call serves every family
 * of a scrape): packets the kernel queued to userspace per queue (only handshake
 * packets ever are), handshake packets by kind and outcome, where they were decided (native warm
 * table or JS), refusals by reason, handshakes the kernel dropped (queue full, enforcer socket full),
 * and whether the operator chose fail-open.
 */
export function registerFastPathMetrics(registry: Registry, sources: FastPathMetricSources): void {
  const { stats } = sources;
  let pending: Promise<EnforcerStats> | null = null;
  const snapshot = (): Promise<EnforcerStats> => {
    pending ??= stats().finally(() => {
      pending = null;
    });
    return pending;
  };
  new Gauge({
    name: "sigil_fastpath_fail_open",
    help: "1 when the fast path was started fail-open (--queue-bypass: with no enforcer bound, new connections pass unchecked)",
    registers: [registry],
    collect() {
      this.set(sources.failOpen ? 1 : 0);
    },
  });
  new Counter({
    name: "sigil_fastpath_kernel_dropped_packets_total",
    help: "Handshake packets the kernel dropped before the enforcer saw them, per queue and cause (full: queue at its length, unread: enforcer socket full); dropped, never let through",
    labelNames: ["queue", "cause"] as const,
    registers: [registry],
    async collect() {
      const queues = (await snapshot()).queues.map((q) => q.queue);
      const kernel = await sources.kernelQueues(queues);
      this.reset();
      for (const q of kernel) {
        this.inc({ queue: String(q.queue), cause: "full" }, q.droppedFull);
        this.inc({ queue: String(q.queue), cause: "unread" }, q.droppedUnread);
      }
    },
  });
  new Counter({
    name: "sigil_fastpath_queued_packets_total",
    help: "Packets the kernel handed to the fast-path enforcer (handshake packets only), per queue",
    labelNames: ["queue"] as const,
    registers: [registry],
    async collect() {
      const { queues } = await snapshot();
      this.reset();
      for (const q of queues) this.inc({ queue: String(q.queue) }, q.received);
    },
  });
  new Counter({
    name: "sigil_fastpath_handshakes_total",
    help: "Fast-path handshake packets by kind (syn, syn_ack) and outcome",
    labelNames: ["kind", "outcome"] as const,
    registers: [registry],
    async collect() {
      const c = (await snapshot()).counters;
      this.reset();
      const rows: [string, string, number][] = [
        ["syn", "signed", c.synSigned],
        ["syn", "accepted", c.synAccepted],
        ["syn", "denied", c.synDenied],
        ["syn_ack", "signed", c.synAckSigned],
        ["syn_ack", "accepted", c.synAckAccepted],
        ["syn_ack", "refused", c.synAckRefused],
      ];
      for (const [kind, outcome, n] of rows) this.inc({ kind, outcome }, n);
    },
  });
  new Counter({
    name: "sigil_fastpath_decided_packets_total",
    help: "Fast-path handshake packets by kind and by where they were decided: native (warm, without entering JS) or js",
    labelNames: ["kind", "by"] as const,
    registers: [registry],
    async collect() {
      const { warm } = (await snapshot()).counters;
      this.reset();
      for (const [kind, w] of Object.entries(warm)) {
        this.inc({ kind, by: "native" }, w.handled);
        this.inc({ kind, by: "js" }, w.handedToJs);
      }
    },
  });
  new Counter({
    name: "sigil_fastpath_rejections_total",
    help: "Fast-path handshakes refused, by reason (token failures, policy, missing state)",
    labelNames: ["reason"] as const,
    registers: [registry],
    async collect() {
      const { rejections } = (await snapshot()).counters;
      this.reset();
      for (const [reason, n] of Object.entries(rejections)) this.inc({ reason }, n ?? 0);
    },
  });
}
