/**
 * Where a sidecar's CPU goes by Sigil function, native work included: reads `perf script` output
 * of sidecars run with `--perf-basic-prof` (JIT frames named) and charges each sample to the
 * innermost frame of Sigil's own code on its stack, with whatever V8, Node, libc or the kernel did
 * below it. Samples inside a socket write (TLS and the system call) are counted apart: every proxy
 * pays those, and `cpu.ts --floor` measures them on their own. A V8 CPU profile cannot show this:
 * it puts native work in "(program)" and inlined functions under their caller.
 *
 *   npx tsx bench/sidecar/run.ts --only http --seconds 20 --sidecar-flags "--perf-basic-prof ..." &
 *   perf record -e cpu-clock -F 1999 -g -p <sidecar pids> -o perf.data -- sleep 5
 *   perf script -i perf.data | npx tsx bench/sidecar/perf-frames.ts [--requests N]
 *
 * `--requests N` (the requests both sidecars served while perf recorded) prints samples per 1,000
 * requests instead of shares.
 */
import { createInterface } from "node:readline";

const args = process.argv.slice(2);
const requestsAt = args.indexOf("--requests");
const requests = requestsAt === -1 ? null : Number(args[requestsAt + 1]);
if (requests !== null && !(requests > 0)) throw new Error("--requests: a positive number of requests");

/** A JIT frame: the function's name and its module's URL path. */
const JIT = /JS:[*~^]?(\S*) file:\/\/(\/[^:]+):/;
/** Sigil's data-path code: a module under the repository's sidecar/ or core/ (bench/sidecar/ is not). */
const OWN_PATH = /\/((?:sidecar|core)\/.+)$/;
const NOT_OWN = /\/(?:bench|test|node_modules)\//;
/**
 * bench/compare's sidecar bundle: one module holding sidecar/ and core/ and the packages they
 * import, of which the data path calls none per request.
 */
const BUNDLE = /\/sigil-sidecar\.mjs$/;

/** The function and repository-relative module of a frame of Sigil's own code, or null. */
function ownFrame(frame: string): string | null {
  const jit = JIT.exec(frame);
  if (jit === null) return null;
  if (BUNDLE.test(jit[2] as string)) return `${jit[1] || "(anonymous)"} (bundle)`;
  if (NOT_OWN.test(jit[2] as string)) return null;
  const path = OWN_PATH.exec(jit[2] as string);
  return path === null ? null : `${jit[1] || "(anonymous)"} ${path[1]}`;
}
const WRITE = /StreamBase::WriteBuffer|StreamBase::Writev|DoTryWrite|TLSWrap::EncOut/;

const byFunction = new Map<string, number>();
let total = 0;
let writes = 0;
let outside = 0;
let frames: string[] = [];

function endSample(): void {
  if (frames.length === 0) return;
  total++;
  let at = -1;
  let name: string | null = null;
  while (name === null && ++at < frames.length) name = ownFrame(frames[at] as string);
  if (name === null) outside++;
  else if (frames.slice(0, at).some((f) => WRITE.test(f))) writes++;
  else byFunction.set(name, (byFunction.get(name) ?? 0) + 1);
  frames = [];
}

for await (const line of createInterface({ input: process.stdin })) {
  if (line.trim() === "") endSample();
  else if (line.startsWith("\t") || line.startsWith(" ")) frames.push(line.trim());
}
endSample();

if (total === 0) throw new Error("no samples on standard input (pipe `perf script` output in)");
const figure = (n: number): string =>
  requests === null ? `${((100 * n) / total).toFixed(1)} %` : (n / (requests / 1000)).toFixed(1);
const unit = requests === null ? "share of samples" : "samples per 1,000 requests";
const rows = [...byFunction].sort((a, b) => b[1] - a[1]);
const own = rows.reduce((sum, [, n]) => sum + n, 0);
process.stdout.write(
  `${total} samples; ${unit}\n\n` +
    `| where | ${unit} |\n| --- | --- |\n` +
    `| Sigil's own code, with what it called (not socket writes) | ${figure(own)} |\n` +
    `| socket writes under Sigil's code (TLS, system call) | ${figure(writes)} |\n` +
    `| no Sigil frame on the stack (reads, TLS, event loop, GC tasks) | ${figure(outside)} |\n\n` +
    `| innermost Sigil function | ${unit} |\n| --- | --- |\n` +
    rows
      .slice(0, 25)
      .map(([name, n]) => `| \`${name}\` | ${figure(n)} |`)
      .join("\n") +
    "\n",
);
