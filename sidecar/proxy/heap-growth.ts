import { setFlagsFromString } from "node:v8";

/**
 * How far V8 lets the old generation grow past what the last full collection left live before it
 * collects again, as a percentage: 1.5× here. V8 picks its own factor of up to 4× for a process it
 * judges to allocate fast, which a proxy under load always is; a sidecar keeps about 20 MB live, so
 * its old space filled with up to 80 MB of garbage between collections and held it resident. With
 * the factor capped, peak RSS under the side-by-side bench fell from 164–185 MB to 105–115 MB with
 * no CPU difference the bench could see (bench/compare/MEMORY.md, "Capping the old generation's
 * growth").
 */
export const HEAP_GROWING_PERCENT = 50;

const FLAG = /^--heap[-_]growing[-_]percent(=|$)/;

/**
 * Caps the old generation's growth for this process unless it was started with its own
 * `--heap-growing-percent` (NODE_OPTIONS cannot carry that flag, so the process sets it itself;
 * V8 reads it at every full collection). Returns whether it set it.
 */
export function capHeapGrowth(execArgv: readonly string[] = process.execArgv): boolean {
  if (execArgv.some((arg) => FLAG.test(arg))) return false;
  setFlagsFromString(`--heap-growing-percent=${HEAP_GROWING_PERCENT}`);
  return true;
}
