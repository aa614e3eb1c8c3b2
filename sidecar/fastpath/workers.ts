/**
 * Runs the fast path on several cores: one worker thread per NFQUEUE queue (see worker.ts for why
 * per-thread state is sound), flow records and stats gathered here. A worker that dies takes its
 * queue with it, and the rules then fail that queue's handshakes closed; the pool reports it.
 */
import { Worker } from "node:worker_threads";
import type { FlowRecord } from "../../core/flow.ts";
import type {
  EnforcerCounters,
  EnforcerSettings,
  EnforcerStats,
  PacketKind,
  PacketTiming,
} from "./enforcer.ts";
import type { EnforcerSources } from "./sources.ts";

/**
 * Where a worker thread starts. Worker threads do not inherit the parent's module hooks, and from
 * source the project runs its TypeScript through tsx without a build step, so each worker registers
 * tsx before importing worker.ts. In the sidecar image the sidecar is one bundle with no TypeScript
 * loader, and the worker a second bundle next to it (scripts/build-image.sh).
 */
function workerEntry(): { loader: string | null; entry: string } {
  if (import.meta.url.endsWith(".ts"))
    return {
      loader: import.meta.resolve("tsx/esm/api"),
      entry: new URL("./worker.ts", import.meta.url).href,
    };
  return { loader: null, entry: new URL("./fastpath-worker.mjs", import.meta.url).href };
}
const BOOT = `
const { workerData } = require("node:worker_threads");
const registered = workerData.loader ? import(workerData.loader).then(({ register }) => register()) : Promise.resolve();
registered.then(() => import(workerData.entry));
`;

export class FastPathWorkers {
  private readonly workers: Worker[] = [];
  /** Why the first worker that ended on its own ended; null while every worker runs. */
  private exitedBecause: string | null = null;
  private nextId = 0;
  private readonly pending = new Map<
    number,
    {
      stats: EnforcerStats[];
      waiting: Set<Worker>;
      done: (s: EnforcerStats) => void;
      fail: (err: Error) => void;
    }
  >();

  private constructor(
    private readonly onFlow: (flow: FlowRecord) => void,
    private readonly onError: (err: Error) => void,
  ) {}

  /** Starts `settings.queueCount` workers, worker i bound to queue `queueFirst + i`. */
  static async start(
    settings: EnforcerSettings,
    sources: EnforcerSources,
    onFlow: (flow: FlowRecord) => void,
    onError: (err: Error) => void,
  ): Promise<FastPathWorkers> {
    const pool = new FastPathWorkers(onFlow, onError);
    const ready: Promise<void>[] = [];
    const { loader, entry } = workerEntry();
    for (let i = 0; i < settings.queueCount; i++) {
      const worker = new Worker(BOOT, {
        eval: true,
        workerData: {
          loader,
          entry,
          settings: { ...settings, queueFirst: settings.queueFirst + i, queueCount: 1 },
          sources,
        },
      });
      pool.workers.push(worker);
      ready.push(
        new Promise<void>((resolve, reject) => {
          worker.once("error", reject);
          worker.on("message", (msg: { type: string }) => {
            if (msg.type === "ready") resolve();
          });
        }),
      );
      worker.on("message", (msg: { type: string }) => {
        // A server identity one worker verified: every other worker may prove itself to it by MAC.
        if (msg.type === "server") {
          for (const other of pool.workers) if (other !== worker) other.postMessage(msg);
        } else pool.onMessage(msg, worker);
      });
      worker.on("error", (err) => pool.onError(err));
      worker.on("exit", (code) => {
        const gone = pool.workers.indexOf(worker);
        if (gone < 0) return;
        // Not a stop(): the worker's queue is unbound and its handshakes fail closed (or pass unchecked).
        pool.workers.splice(gone, 1);
        const why = `fast-path worker for queue ${settings.queueFirst + i} exited (${code})`;
        pool.exitedBecause ??= why;
        pool.forget(worker);
        pool.onError(new Error(why));
      });
    }
    try {
      await Promise.all(ready);
    } catch (err) {
      await pool.stop();
      throw err;
    }
    return pool;
  }

  private onMessage(
    msg: {
      type: string;
      flows?: FlowRecord[];
      id?: number;
      stats?: EnforcerStats;
      message?: string;
    },
    from: Worker,
  ): void {
    if (msg.type === "flows" && msg.flows) for (const flow of msg.flows) this.onFlow(flow);
    else if (msg.type === "error") this.onError(new Error(msg.message));
    else if (msg.type === "stats" && msg.id !== undefined && msg.stats) {
      const p = this.pending.get(msg.id);
      if (!p?.waiting.delete(from)) return;
      p.stats.push(msg.stats);
      this.settle(msg.id);
    }
  }

  /** A stats request no longer waits for a worker that ended. */
  private forget(worker: Worker): void {
    for (const [id, p] of this.pending) if (p.waiting.delete(worker)) this.settle(id);
  }

  private settle(id: number): void {
    const p = this.pending.get(id);
    if (!p || p.waiting.size > 0) return;
    this.pending.delete(id);
    if (p.stats.length > 0) p.done(mergeStats(p.stats));
    else p.fail(new Error("no fast-path worker is running"));
  }

  /** Why a worker ended on its own (not through stop()), or null while every worker runs. */
  exited(): string | null {
    return this.exitedBecause;
  }

  /** New identity, trust or policy for every worker. */
  update(sources: EnforcerSources): void {
    for (const w of this.workers) w.postMessage({ type: "sources", sources });
  }

  /** Counters of the workers still running, summed; rejects when none is. */
  stats(): Promise<EnforcerStats> {
    const id = this.nextId++;
    return new Promise((done, fail) => {
      this.pending.set(id, { stats: [], waiting: new Set(this.workers), done, fail });
      for (const w of this.workers) w.postMessage({ type: "stats", id });
      this.settle(id);
    });
  }

  async stop(): Promise<void> {
    await Promise.all(this.workers.splice(0).map((w) => w.terminate()));
  }
}

function addCounters(into: EnforcerCounters, from: EnforcerCounters): void {
  for (const key of Object.keys(from) as (keyof EnforcerCounters)[]) {
    const v = from[key];
    if (typeof v === "number") (into[key] as number) += v;
  }
  for (const [kind, t] of Object.entries(from.timing) as [PacketKind, PacketTiming][]) {
    const sum = into.timing[kind];
    sum.count += t.count;
    sum.decideUs += t.decideUs;
    sum.verdictUs += t.verdictUs;
    sum.cpuSamples += t.cpuSamples;
    sum.decideCpuUs += t.decideCpuUs;
    sum.verdictCpuUs += t.verdictCpuUs;
  }
  for (const [kind, w] of Object.entries(from.warm) as [PacketKind, EnforcerCounters["warm"][PacketKind]][]) {
    const sum = into.warm[kind];
    into.warm[kind] = {
      handled: sum.handled + w.handled,
      handedToJs: sum.handedToJs + w.handedToJs,
      decideUs: sum.decideUs + w.decideUs,
      verdictUs: sum.verdictUs + w.verdictUs,
    };
  }
  for (const [reason, n] of Object.entries(from.rejections) as [
    keyof EnforcerCounters["rejections"],
    number,
  ][]) {
    into.rejections[reason] = (into.rejections[reason] ?? 0) + n;
  }
}

/** One view over every worker: all queues, counters and cache figures summed. */
export function mergeStats(all: readonly EnforcerStats[]): EnforcerStats {
  const [first, ...rest] = all;
  if (!first) throw new Error("no worker stats to merge");
  const counters = structuredClone(first.counters);
  for (const s of rest) addCounters(counters, s.counters);
  return {
    queues: all.flatMap((s) => s.queues).sort((a, b) => a.queue - b.queue),
    counters,
    identityCache: {
      size: all.reduce((n, s) => n + s.identityCache.size, 0),
      hits: all.reduce((n, s) => n + s.identityCache.hits, 0),
      misses: all.reduce((n, s) => n + s.identityCache.misses, 0),
    },
  };
}
