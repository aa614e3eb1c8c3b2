import cluster from "node:cluster";
import type { Worker } from "node:cluster";
import type { Logger } from "pino";
import type { FlowRecord } from "../../core/flow.ts";
import type { FlowSink } from "../inputs/sources.ts";
import type { WorkerMetrics } from "./metrics.ts";
import type { FromWorker, ListenerAddress, ToWorker, WorkerInit } from "./relay-protocol.ts";

/**
 * The primary's side of the data-path workers: forks them (node:cluster, so they share the
 * listening sockets), hands each the whole current state when it starts, relays every change,
 * brings their flow records home, and restarts a worker that dies (the death is logged; a worker
 * that dies young waits a growing delay so a crash loop does not spin). Draining asks every
 * worker to drain and waits until each has left.
 */

export type SchedulingPolicy = "rr" | "none";

export interface WorkerPoolOptions {
  readonly count: number;
  /** The whole state a new worker starts from (read at every fork, so a restart gets the latest). */
  readonly init: () => WorkerInit;
  readonly flows: FlowSink;
  readonly log: Logger;
  /**
   * How connections reach workers: "rr" = the primary accepts and hands each connection to the
   * next worker in turn; "none" = every worker accepts on the shared socket and the kernel picks.
   */
  readonly scheduling: SchedulingPolicy;
  /** How long a worker may take to answer a metrics request before it is left out (default 2 s). */
  readonly statsTimeoutMs?: number;
  /** A worker still running this long after being asked to drain is killed (its own drain timeout plus slack). */
  readonly drainDeadlineMs: number;
}

export interface WorkerStatus {
  readonly worker: number;
  readonly pid: number | undefined;
  readonly state: "starting" | "serving";
  readonly startedAt: string;
}

export interface Listeners {
  readonly inbound: ListenerAddress;
  readonly outbound: ListenerAddress | null;
  readonly outboundTargets: readonly ListenerAddress[];
}

export class WorkerStartError extends Error {
  constructor(worker: number, reason: string) {
    super(`sidecar worker ${worker} did not start: ${reason}`);
    this.name = "WorkerStartError";
  }
}

interface Slot {
  readonly worker: Worker;
  readonly startedAt: number;
  /** `init` sent: later changes go to this worker as updates. */
  initialized: boolean;
  listening: Listeners | null;
  drained: boolean;
}

const YOUNG_MS = 5_000;
const MAX_RESTART_DELAY_MS = 10_000;

function isMessage(value: unknown): value is FromWorker {
  return typeof value === "object" && value !== null && typeof (value as { t?: unknown }).t === "string";
}

export class WorkerPool {
  private readonly slots = new Map<number, Slot>();
  private readonly statsWaiters = new Map<string, (m: WorkerMetrics | null) => void>();
  private nextStatsId = 0;
  private stopping = false;
  private youngDeaths = 0;
  private readonly restartTimers = new Set<NodeJS.Timeout>();
  private firstListeners: Listeners | null = null;

  constructor(private readonly o: WorkerPoolOptions) {
    if (!cluster.isPrimary) throw new Error("a worker pool runs in the primary process only");
    // Must be set before the first fork; NODE_CLUSTER_SCHED_POLICY, when set, is the operator's choice.
    if (process.env.NODE_CLUSTER_SCHED_POLICY === undefined)
      cluster.schedulingPolicy = o.scheduling === "rr" ? cluster.SCHED_RR : cluster.SCHED_NONE;
    // Advanced serialization: flow records and metrics cross as structured clones.
    cluster.setupPrimary({ serialization: "advanced" });
  }

  /** Forks every worker; resolves with the shared listeners once all of them listen. */
  async start(): Promise<Listeners> {
    const started = Array.from({ length: this.o.count }, () => this.fork());
    try {
      const listeners = await Promise.all(started);
      this.firstListeners = listeners[0] as Listeners;
      return this.firstListeners;
    } catch (err) {
      await this.close();
      throw err;
    }
  }

  /** Sends a state change to every worker that has its initial state. */
  broadcast(message: ToWorker): void {
    for (const slot of this.slots.values())
      if (slot.initialized && slot.worker.isConnected()) slot.worker.send(message);
  }

  status(): WorkerStatus[] {
    return [...this.slots.values()].map((s) => ({
      worker: s.worker.id,
      pid: s.worker.process.pid,
      state: s.listening ? "serving" : "starting",
      startedAt: new Date(s.startedAt).toISOString(),
    }));
  }

  get serving(): number {
    return [...this.slots.values()].filter((s) => s.listening !== null).length;
  }

  /** Every serving worker's metrics; one that does not answer in time is left out (and logged). */
  async stats(): Promise<WorkerMetrics[]> {
    const timeoutMs = this.o.statsTimeoutMs ?? 2_000;
    const asks = [...this.slots.values()]
      .filter((s) => s.listening && s.worker.isConnected())
      .map(
        (s) =>
          new Promise<WorkerMetrics | null>((resolve) => {
            const id = this.nextStatsId++;
            const key = `${s.worker.id}:${id}`;
            const timer = setTimeout(() => {
              this.statsWaiters.delete(key);
              this.o.log.warn({ worker: s.worker.id }, "worker did not answer a metrics request");
              resolve(null);
            }, timeoutMs);
            this.statsWaiters.set(key, (m) => {
              clearTimeout(timer);
              this.statsWaiters.delete(key);
              resolve(m);
            });
            s.worker.send({ t: "stats", id } satisfies ToWorker);
          }),
      );
    return (await Promise.all(asks)).filter((m): m is WorkerMetrics => m !== null);
  }

  /** Asks every worker to drain and waits until each has left; clean when every one drained cleanly. */
  async drain(): Promise<boolean> {
    this.stop();
    const slots = [...this.slots.values()];
    const exits = slots.map((s) => this.exited(s.worker));
    for (const s of slots) if (s.worker.isConnected()) s.worker.send({ t: "drain" } satisfies ToWorker);
    // A worker whose event loop is stuck never answers; past the deadline it is killed (unclean).
    const deadline = setTimeout(() => {
      for (const s of slots) if (!s.drained) s.worker.process.kill("SIGKILL");
    }, this.o.drainDeadlineMs);
    await Promise.all(exits);
    clearTimeout(deadline);
    return slots.every((s) => s.drained);
  }

  /** Stops every worker at once. */
  async close(): Promise<void> {
    this.stop();
    const slots = [...this.slots.values()];
    const exits = slots.map((s) => this.exited(s.worker));
    for (const s of slots) s.worker.process.kill("SIGKILL");
    await Promise.all(exits);
  }

  private stop(): void {
    this.stopping = true;
    for (const timer of this.restartTimers) clearTimeout(timer);
    this.restartTimers.clear();
  }

  private exited(worker: Worker): Promise<void> {
    if (worker.process.exitCode !== null || worker.process.signalCode !== null) return Promise.resolve();
    return new Promise((resolve) => worker.once("exit", () => resolve()));
  }

  private fork(): Promise<Listeners> {
    const worker = cluster.fork();
    const slot: Slot = { worker, startedAt: Date.now(), initialized: false, listening: null, drained: false };
    this.slots.set(worker.id, slot);
    return new Promise<Listeners>((resolve, reject) => {
      let settled = false;
      const settle = (err: Error | null, listeners?: Listeners): void => {
        if (settled) return;
        settled = true;
        if (err) reject(err);
        else resolve(listeners as Listeners);
      };
      worker.on("message", (message: unknown) => {
        if (!isMessage(message)) {
          this.o.log.warn({ worker: worker.id }, "unreadable message from a worker");
          return;
        }
        this.onMessage(slot, message, settle);
      });
      worker.on("error", (err) =>
        this.o.log.warn({ worker: worker.id, err: err.message }, "worker IPC error"),
      );
      worker.on("exit", (code, signal) => {
        this.slots.delete(worker.id);
        for (const [key, answer] of this.statsWaiters) if (key.startsWith(`${worker.id}:`)) answer(null);
        settle(new WorkerStartError(worker.id, `exited (code ${code}, signal ${signal}) before listening`));
        this.onExit(slot, code, signal);
      });
    });
  }

  private onMessage(
    slot: Slot,
    message: FromWorker,
    settle: (err: Error | null, l?: Listeners) => void,
  ): void {
    switch (message.t) {
      case "hello":
        // The init is read now, so it holds every change made before; later ones follow as updates.
        slot.initialized = true;
        slot.worker.send({ t: "init", init: this.o.init() } satisfies ToWorker);
        return;
      case "listening":
        slot.listening = {
          inbound: message.inbound,
          outbound: message.outbound,
          outboundTargets: message.outboundTargets,
        };
        this.o.log.info({ worker: slot.worker.id, pid: slot.worker.process.pid }, "worker serving");
        settle(null, slot.listening);
        return;
      case "failed":
        settle(new WorkerStartError(slot.worker.id, message.error));
        return;
      case "flows":
        if (Array.isArray(message.records))
          for (const record of message.records as readonly FlowRecord[]) this.o.flows.report(record);
        return;
      case "stats":
        this.statsWaiters.get(`${slot.worker.id}:${message.id}`)?.({
          worker: slot.worker.id,
          metrics: message.metrics,
        });
        return;
      case "drained":
        slot.drained = message.clean;
        return;
    }
  }

  private onExit(slot: Slot, code: number | null, signal: string | null): void {
    // Before the pool first served, a dead worker fails the start instead of being replaced.
    if (this.stopping || !this.firstListeners) return;
    const lived = Date.now() - slot.startedAt;
    this.youngDeaths = lived < YOUNG_MS ? this.youngDeaths + 1 : 0;
    const delay = this.youngDeaths === 0 ? 0 : Math.min(100 * 2 ** this.youngDeaths, MAX_RESTART_DELAY_MS);
    this.o.log.error(
      {
        worker: slot.worker.id,
        pid: slot.worker.process.pid,
        code,
        signal,
        livedMs: lived,
        restartInMs: delay,
      },
      "data-path worker died: restarting it",
    );
    const restart = (): void => {
      this.restartTimers.delete(timer);
      if (this.stopping) return;
      this.fork().catch((err: Error) => this.o.log.error({ err: err.message }, "worker restart failed"));
    };
    const timer = setTimeout(restart, delay);
    this.restartTimers.add(timer);
  }
}
