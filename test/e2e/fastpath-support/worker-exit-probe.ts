/**
 * Starts a FastPathWorkers pool of two queues from the EnforcerSources JSON file given, ends one
 * worker thread the way a crash would (not through stop()), and prints, one JSON line each, what the
 * pool says before and after: which queues answer stats and why a worker is gone.
 */
import { readFileSync } from "node:fs";
import type { Worker } from "node:worker_threads";
import { FAST_PATH_DEFAULTS as defaults } from "../../../sidecar/fastpath/config.ts";
import type { EnforcerSources } from "../../../sidecar/fastpath/sources.ts";
import { FastPathWorkers } from "../../../sidecar/fastpath/workers.ts";

const [sourcesFile, queueFirst] = process.argv.slice(2);
const sources = JSON.parse(readFileSync(sourcesFile as string, "utf8")) as EnforcerSources;
const errors: string[] = [];
const pool = await FastPathWorkers.start(
  {
    queueFirst: Number(queueFirst),
    queueCount: 2,
    exid: defaults.exid,
    windowMs: defaults.windowMs,
    maxTokenBytes: defaults.maxTokenBytes,
  },
  sources,
  () => undefined,
  (err) => errors.push(err.message),
);
const queues = async (): Promise<number[] | string> =>
  pool.stats().then(
    (s) => s.queues.map((q) => q.queue),
    (err: Error) => err.message,
  );
console.log(JSON.stringify({ step: "started", exited: pool.exited(), queues: await queues() }));
const [first] = (pool as unknown as { workers: Worker[] }).workers;
await first?.terminate();
console.log(JSON.stringify({ step: "one ended", exited: pool.exited(), queues: await queues(), errors }));
await pool.stop();
console.log(JSON.stringify({ step: "stopped", queues: await queues() }));
