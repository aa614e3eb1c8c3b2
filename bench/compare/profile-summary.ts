/**
 * Summarises a V8 CPU profile (node --cpu-prof): self and total time per function, heaviest first,
 * so a profile of a sidecar under load reads as "function, file:line, % of CPU".
 *
 *   npx tsx bench/compare/profile-summary.ts <file.cpuprofile> [--top 25]
 */
import { readFileSync } from "node:fs";
import { Command } from "commander";

interface ProfileNode {
  readonly id: number;
  readonly callFrame: { readonly functionName: string; readonly url: string; readonly lineNumber: number };
  readonly children?: readonly number[];
}
interface CpuProfile {
  readonly nodes: readonly ProfileNode[];
  readonly samples: readonly number[];
}

export interface FunctionCost {
  readonly name: string;
  readonly where: string;
  readonly selfPercent: number;
  readonly totalPercent: number;
}

/** One function of a profile as "name<TAB>file:line", the file relative to node_modules or the bench bundle. */
export function frameKey(f: {
  readonly functionName: string;
  readonly url: string;
  readonly lineNumber: number;
}): string {
  return `${f.functionName || "(anonymous)"}\t${f.url.replace(/^.*\/(node_modules|sigil-bench)\//, "$1/")}:${f.lineNumber + 1}`;
}

/** Rows of per-function self and inclusive amounts (keyed by `frameKey`), each as a share of `all`. */
export function costRows(
  self: ReadonlyMap<string, number>,
  total: ReadonlyMap<string, number>,
  all: number,
): FunctionCost[] {
  const n = all || 1;
  return [...total.keys()].map((k) => {
    const [name = "", where = ""] = k.split("\t");
    return {
      name,
      where,
      selfPercent: ((self.get(k) ?? 0) / n) * 100,
      totalPercent: ((total.get(k) ?? 0) / n) * 100,
    };
  });
}

export function summarizeProfile(profile: CpuProfile): FunctionCost[] {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const key = (n: ProfileNode): string => frameKey(n.callFrame);
  const self = new Map<string, number>();
  const total = new Map<string, number>();
  for (const id of profile.samples) {
    const leaf = byId.get(id);
    if (!leaf) continue;
    self.set(key(leaf), (self.get(key(leaf)) ?? 0) + 1);
    const seen = new Set<string>();
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const node = byId.get(cur);
      if (!node) break;
      const k = key(node);
      if (seen.has(k)) continue;
      seen.add(k);
      total.set(k, (total.get(k) ?? 0) + 1);
    }
  }
  return costRows(self, total, profile.samples.length);
}

/** Prints the heaviest rows by self share, then by inclusive share; `what` names the share. */
export function printCosts(rows: readonly FunctionCost[], top: number, what: string): void {
  const line = (r: FunctionCost): string =>
    `${r.selfPercent.toFixed(1).padStart(6)}  ${r.totalPercent.toFixed(1).padStart(7)}  ${r.name}  ${r.where}`;
  console.log(`self %  total %  function  location  (% of ${what})`);
  for (const r of [...rows].sort((a, b) => b.selfPercent - a.selfPercent).slice(0, top)) console.log(line(r));
  console.log(`\nby total (inclusive) ${what}:`);
  for (const r of [...rows].sort((a, b) => b.totalPercent - a.totalPercent).slice(0, top))
    console.log(line(r));
}

if (process.argv[1] && import.meta.url.endsWith(process.argv[1].split("/").pop() ?? "")) {
  const opts = new Command().argument("<file>").option("--top <n>", "rows", "25").parse();
  const profile = JSON.parse(readFileSync(opts.args[0] as string, "utf8")) as CpuProfile;
  printCosts(summarizeProfile(profile), Number(opts.opts<{ top: string }>().top), "CPU samples");
}
