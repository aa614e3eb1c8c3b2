import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { formatForRepo } from "./format.ts";
import { REPO } from "./measure.ts";
import { replaceResultsSection, renderResults } from "./report.ts";
import type { RunResults } from "./results.ts";
import { latencyPlotSvg } from "./svg.ts";

const RESULTS_DIR = join(REPO, "bench", "compare", "results");

/**
 * Writes a run's JSON and latency plot into results/, and its report: results/quick.md for a quick
 * run, the results section of BENCHMARKS.md for a full one. Returns where the report went.
 */
export async function publishRun(results: RunResults): Promise<string> {
  await mkdir(RESULTS_DIR, { recursive: true });
  const stem = results.quick ? "quick" : "latest";
  await writeFile(join(RESULTS_DIR, `${stem}.json`), `${JSON.stringify(results, null, 2)}\n`);
  return publishReport(results);
}

/** Renders a run's plot and report again from its results (after a change to report.ts or svg.ts). */
export async function publishReport(results: RunResults): Promise<string> {
  const stem = results.quick ? "quick" : "latest";
  await writeFile(join(RESULTS_DIR, `${stem}-latency.svg`), latencyPlotSvg(results));
  const section = renderResults(results, `bench/compare/results/${stem}-latency.svg`);
  if (results.quick) {
    await writeFile(join(RESULTS_DIR, "quick.md"), section);
    return "bench/compare/results/quick.md";
  }
  const file = join(REPO, "BENCHMARKS.md");
  const current = await readFile(file, "utf8").catch(() => "");
  await writeFile(file, await formatForRepo(file, replaceResultsSection(current, section)));
  return "BENCHMARKS.md";
}
