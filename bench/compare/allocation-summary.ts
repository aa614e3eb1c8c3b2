/**
 * Summarises a V8 sampling heap profile written by allocation-sampler.mjs: the share of all sampled
 * bytes each function allocated itself and under it, heaviest first, so "who allocates per request"
 * reads as "function, file:line, % of bytes".
 *
 *   npx tsx bench/compare/allocation-summary.ts <file.heapprofile> [--top 25]
 */
import { readFileSync } from "node:fs";
import { Command } from "commander";
import { costRows, frameKey, printCosts, type FunctionCost } from "./profile-summary.ts";

export interface AllocationNode {
  readonly callFrame: { readonly functionName: string; readonly url: string; readonly lineNumber: number };
  readonly selfSize: number;
  readonly children?: readonly AllocationNode[];
}

/** Self and inclusive share of the sampled bytes per function (a recursive function counts once per path). */
export function summarizeAllocations(head: AllocationNode): { rows: FunctionCost[]; totalBytes: number } {
  const self = new Map<string, number>();
  const total = new Map<string, number>();
  let totalBytes = 0;
  const walk = (node: AllocationNode, above: ReadonlySet<string>): number => {
    const k = frameKey(node.callFrame);
    self.set(k, (self.get(k) ?? 0) + node.selfSize);
    totalBytes += node.selfSize;
    const path = above.has(k) ? above : new Set([...above, k]);
    let under = node.selfSize;
    for (const c of node.children ?? []) under += walk(c, path);
    if (!above.has(k)) total.set(k, (total.get(k) ?? 0) + under);
    return under;
  };
  walk(head, new Set());
  return { rows: costRows(self, total, totalBytes), totalBytes };
}

if (process.argv[1] && import.meta.url.endsWith(process.argv[1].split("/").pop() ?? "")) {
  const opts = new Command().argument("<file>").option("--top <n>", "rows", "25").parse();
  const profile = JSON.parse(readFileSync(opts.args[0] as string, "utf8")) as { head: AllocationNode };
  const { rows, totalBytes } = summarizeAllocations(profile.head);
  console.log(`${(totalBytes / 1048576).toFixed(1)} MB sampled`);
  printCosts(rows, Number(opts.opts<{ top: string }>().top), "bytes allocated");
}
