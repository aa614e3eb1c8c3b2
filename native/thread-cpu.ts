import { load } from "./load.ts";

/** CPU time (user + system) the calling thread has used, in µs: per-thread accounting for worker threads. */
export function threadCpuMicros(): number {
  return load().threadCpuMicros();
}
