import type { Supervisor } from "./procs.ts";
import type { TcpRow } from "./results.ts";

/** Bulk TCP through the Sigil fast path (two enforcers in network namespaces). */
export async function fastPathThroughput(_sup: Supervisor, _dir: string, _seconds: number): Promise<TcpRow> {
  return { name: "Sigil fast path", result: null, note: "not measured yet" };
}
