import { join } from "node:path";
import { REPO } from "./measure.ts";
import type { Supervisor } from "./procs.ts";
import type { TcpRow } from "./results.ts";

/**
 * Bulk TCP through the Sigil fast path, measured by the fast path's own benchmark
 * (bench/fastpath/run.ts, called as it is): two network namespaces with the real enforcers, iperf3
 * with no enforcement and through the fast path. The fast path cannot run on loopback (it acts on
 * handshake packets crossing a veth), so its ratio is taken against that run's own direct figure.
 */

const ROW = /^\|\s*(none \(kernel only\)|Sigil fast path)\s*\|\s*([\d.]+)\s*\|/gm;

export function parseFastPathOutput(text: string): { none: number; fast: number } | null {
  const found = new Map<string, number>();
  for (const m of text.matchAll(ROW)) found.set(m[1] as string, Number(m[2]));
  const none = found.get("none (kernel only)");
  const fast = found.get("Sigil fast path");
  return none && fast !== undefined ? { none, fast } : null;
}

export async function fastPathThroughput(sup: Supervisor, seconds: number): Promise<TcpRow> {
  const name = "Sigil fast path";
  const child = sup.start(
    "fast-path bench",
    process.execPath,
    [
      "--import",
      "tsx",
      join(REPO, "bench", "fastpath", "run.ts"),
      "--iperf-seconds",
      String(seconds),
      "--runs",
      "1",
      "--connects",
      "200",
      "--rate-seconds",
      "2",
      "--no-write",
    ],
    { cwd: REPO },
  );
  let code: number | null;
  try {
    code = await sup.exitOf(child, (seconds * 3 + 120) * 1000);
  } catch (err) {
    return { name, result: null, baselineGbitPerSecond: null, note: (err as Error).message };
  }
  const parsed = parseFastPathOutput(child.output());
  if (code !== 0 || !parsed) {
    return {
      name,
      result: null,
      baselineGbitPerSecond: null,
      note: `bench/fastpath/run.ts exited with ${code}: ${child.output().slice(-600)}`,
    };
  }
  return {
    name,
    result: { gbitPerSecond: parsed.fast, proxyCpuSeconds: NaN, seconds },
    baselineGbitPerSecond: parsed.none,
    note: `between two network namespaces (bench/fastpath/run.ts); × direct is against that run's own no-enforcement figure, ${parsed.none.toFixed(2)} Gbit/s`,
  };
}
