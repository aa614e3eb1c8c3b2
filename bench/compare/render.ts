/**
 * Renders the last run's report again from its saved results, without measuring: after a change to
 * how results are judged or shown (report.ts, svg.ts), so BENCHMARKS.md shows the same run the new way.
 *
 *   npx tsx bench/compare/render.ts            the last full run (results/latest.json)
 *   npx tsx bench/compare/render.ts --quick    the last quick run (results/quick.json)
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { REPO } from "./measure.ts";
import { publishReport } from "./publish.ts";
import type { RunResults } from "./results.ts";

const stem = process.argv.includes("--quick") ? "quick" : "latest";
const file = join(REPO, "bench", "compare", "results", `${stem}.json`);
const results = JSON.parse(await readFile(file, "utf8")) as RunResults;
process.stdout.write(`${await publishReport(results)} rendered from ${file}\n`);
