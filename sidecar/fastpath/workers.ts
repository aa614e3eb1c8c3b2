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
 * Worker threads do not inherit the parent's module hooks, and the project runs its TypeScript
 * through tsx without a build step: each worker registers tsx before importing its entry module.
 */
const TSX_LOADER = import.meta.resolve("tsx/esm/api");
const BOOT = `
const { workerData } = require("node:worker_threads");
import(workerData.loader).then(({ register }) => { register(); return import(workerData.entry); });
`;

export class FastPathWorkers {
  private readonly workers: Worker[] = [];
  private nextId = 0;
  private readonly pending = new Map<
    number,
    { stats: EnforcerStats[]; want: number; done: (s: EnforcerStats) => void }
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
    for (let i = 0; i < settings.queueCount; i++) {
      const worker = new Worker(BOOT, {
        eval: true,
        workerData: {
          loader: TSX_LOADER,
          entry: new URL("./worker.ts", import.meta.url).href,
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
        } else pool.onMessage(msg);
      });
      worker.on("error", (err) => pool.onError(err));
      worker.on("exit", (code) => {
        if (code !== 0)
          pool.onError(new Error(`fast-path worker for queue ${settings.queueFirst + i} exited (${code})`));
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

  private onMessage(msg: {
    type: string;
    flows?: FlowRecord[];
    id?: number;
    stats?: EnforcerStats;
    message?: string;
  }): void {
    if (msg.type === "flows" && msg.flows) for (const flow of msg.flows) this.onFlow(flow);
    else if (msg.type === "error") this.onError(new Error(msg.message));
    else if (msg.type === "stats" && msg.id !== undefined && msg.stats) {
      const p = this.pending.get(msg.id);
      if (!p) return;
      p.stats.push(msg.stats);
      if (p.stats.length === p.want) {
        this.pending.delete(msg.id);
        p.done(mergeStats(p.stats));
      }
    }
  }

  /** New identity, trust or policy for every worker. */
  update(sources: EnforcerSources): void {
    for (const w of this.workers) w.postMessage({ type: "sources", sources });
  }

  stats(): Promise<EnforcerStats> {
    const id = this.nextId++;
    return new Promise((done) => {
      this.pending.set(id, { stats: [], want: this.workers.length, done });
      for (const w of this.workers) w.postMessage({ type: "stats", id });
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
    queues: all.flatMap((s) => s.queues),
    counters,
    identityCache: {
      size: all.reduce((n, s) => n + s.identityCache.size, 0),
      hits: all.reduce((n, s) => n + s.identityCache.hits, 0),
      misses: all.reduce((n, s) => n + s.identityCache.misses, 0),
    },
  };
}
