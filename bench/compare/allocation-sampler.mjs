/**
 * Loaded with `--import` into a sidecar the harness runs (`--sidecar-node-flags`), so its
 * allocations can be attributed: the first SIGUSR2 starts V8's sampling heap profiler, counting
 * objects the collector has already freed too (what a request allocates is garbage by the time it is
 * answered); the second stops it and writes `<pid>.heapprofile` into SIGIL_ALLOCATION_DIR (default:
 * the working directory). allocation-summary.ts reads it. Plain JavaScript: the measured process
 * runs a bundle, without a TypeScript loader.
 */
import { writeFileSync } from "node:fs";
import { Session } from "node:inspector";
import { join } from "node:path";

const session = new Session();
session.connect();
session.post("HeapProfiler.enable");
let sampling = false;
process.on("SIGUSR2", () => {
  if (!sampling) {
    sampling = true;
    session.post("HeapProfiler.startSampling", {
      samplingInterval: 1024,
      includeObjectsCollectedByMajorGC: true,
      includeObjectsCollectedByMinorGC: true,
    });
    return;
  }
  sampling = false;
  session.post("HeapProfiler.stopSampling", (err, result) => {
    if (err) return process.stderr.write(`allocation-sampler: ${err.message}\n`);
    const file = join(process.env.SIGIL_ALLOCATION_DIR ?? process.cwd(), `${process.pid}.heapprofile`);
    writeFileSync(file, JSON.stringify(result.profile));
  });
});
