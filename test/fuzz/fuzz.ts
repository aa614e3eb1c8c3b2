/**
 * The property-fuzzing harness every target in this folder uses: a fixed seed and a fixed number of
 * generated inputs per target, so `npm test` tries the same inputs on a fast machine and a loaded
 * one (a time budget found more on a quiet machine than CI had ever tried), or a time budget for
 * longer local runs; all overridable from the environment. The target's committed
 * corpus replayed first, then inputs that mutate corpus entries the way a coverage-guided fuzzer
 * does (bit flips, inserted dictionary words, deleted and repeated ranges, splices) mixed with raw
 * random bytes.
 *
 *   SIGIL_FUZZ_SEED=<int>   another fixed sequence (default 20261204)
 *   SIGIL_FUZZ_RUNS=<n>     generated inputs per target (default 3000)
 *   SIGIL_FUZZ_MS=<ms>      instead: as many inputs as fit in this time per target
 *
 * A failure prints the seed, the shrunk input and the path to replay it; a crash found this way is
 * added to the target's corpus (test/fuzz/corpus/<target>/) so every later run replays it.
 */
import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import fc from "fast-check";

const CORPUS_ROOT = new URL("./corpus/", import.meta.url).pathname;
const DEFAULT_SEED = 20261204;
const DEFAULT_RUNS = 3000;

export interface FuzzBudget {
  readonly seed: number;
  readonly runs: number;
  /** Set only from SIGIL_FUZZ_MS: run until the time is spent instead of a count. */
  readonly timeMs: number | undefined;
}

function envInteger(name: string, fallback: number, min: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return fallback;
  const n = Number(raw);
  if (!Number.isSafeInteger(n) || n < min)
    throw new RangeError(`${name}=${raw}: an integer >= ${min} is needed`);
  return n;
}

export function fuzzBudget(): FuzzBudget {
  return {
    seed: envInteger("SIGIL_FUZZ_SEED", DEFAULT_SEED, 0),
    runs: envInteger("SIGIL_FUZZ_RUNS", DEFAULT_RUNS, 1),
    timeMs: process.env.SIGIL_FUZZ_MS ? envInteger("SIGIL_FUZZ_MS", 0, 1) : undefined,
  };
}

/** The committed inputs of `target`, in file-name order. */
export function corpus(target: string): Buffer[] {
  const dir = join(CORPUS_ROOT, target);
  return readdirSync(dir)
    .filter((name) => !name.startsWith("."))
    .sort()
    .map((name) => readFileSync(join(dir, name)));
}

type Mutation =
  | { readonly kind: "flip"; readonly at: number; readonly bit: number }
  | { readonly kind: "insert"; readonly at: number; readonly bytes: Uint8Array }
  | { readonly kind: "delete"; readonly at: number; readonly length: number }
  | { readonly kind: "repeat"; readonly at: number; readonly length: number; readonly times: number }
  | { readonly kind: "splice"; readonly at: number; readonly other: number; readonly from: number };

function mutate(input: Buffer, m: Mutation, seeds: readonly Buffer[]): Buffer {
  const at = input.length === 0 ? 0 : m.at % (input.length + 1);
  switch (m.kind) {
    case "flip": {
      if (input.length === 0) return input;
      const out = Buffer.from(input);
      const i = at % input.length;
      out[i] = (out[i] as number) ^ (1 << m.bit);
      return out;
    }
    case "insert":
      return Buffer.concat([input.subarray(0, at), m.bytes, input.subarray(at)]);
    case "delete":
      return Buffer.concat([input.subarray(0, at), input.subarray(at + m.length)]);
    case "repeat": {
      const piece = input.subarray(at, at + m.length);
      return Buffer.concat([
        input.subarray(0, at),
        ...Array<Buffer>(m.times).fill(piece),
        input.subarray(at),
      ]);
    }
    case "splice": {
      const other = seeds[m.other % seeds.length] as Buffer;
      return Buffer.concat([input.subarray(0, at), other.subarray(m.from % (other.length + 1))]);
    }
  }
}

/**
 * Byte strings near the seeds: a seed with up to eight mutations, `dictionary` words among the
 * inserted bytes; a quarter of the inputs are raw random bytes.
 */
export function mutatedBytes(
  seeds: readonly Buffer[],
  dictionary: readonly string[] = [],
): fc.Arbitrary<Buffer> {
  if (seeds.length === 0) throw new Error("mutatedBytes needs at least one seed");
  const words = dictionary.map((w) => Uint8Array.from(Buffer.from(w, "latin1")));
  const inserted =
    words.length > 0
      ? fc.oneof(fc.uint8Array({ maxLength: 8 }), fc.constantFrom(...words))
      : fc.uint8Array({ maxLength: 8 });
  const mutation: fc.Arbitrary<Mutation> = fc.oneof(
    fc.record({ kind: fc.constant("flip" as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }),
    fc.record({ kind: fc.constant("insert" as const), at: fc.nat(), bytes: inserted }),
    fc.record({
      kind: fc.constant("delete" as const),
      at: fc.nat(),
      length: fc.integer({ min: 1, max: 16 }),
    }),
    fc.record({
      kind: fc.constant("repeat" as const),
      at: fc.nat(),
      length: fc.integer({ min: 1, max: 16 }),
      times: fc.integer({ min: 1, max: 8 }),
    }),
    fc.record({ kind: fc.constant("splice" as const), at: fc.nat(), other: fc.nat(), from: fc.nat() }),
  );
  const near = fc
    .tuple(fc.nat({ max: seeds.length - 1 }), fc.array(mutation, { maxLength: 8 }))
    .map(([i, ms]) => ms.reduce((b, m) => mutate(b, m, seeds), seeds[i] as Buffer));
  return fc.oneof(
    { arbitrary: near, weight: 3 },
    { arbitrary: fc.uint8Array({ maxLength: 512 }).map((a) => Buffer.from(a)), weight: 1 },
  );
}

export interface FuzzRun {
  /** Inputs the property ran on (corpus included): a budget that ran nothing tested nothing. */
  readonly runs: number;
}

/**
 * Checks `property` on the target's corpus, then on the budget's generated inputs; throws fast-check's report (seed, shrunk counterexample) on the first failure.
 */
export async function fuzz<T>(
  target: string,
  examples: readonly T[],
  arbitrary: fc.Arbitrary<T>,
  property: (input: T) => void | Promise<void>,
): Promise<FuzzRun> {
  const { seed, runs: numRuns, timeMs } = fuzzBudget();
  let runs = 0;
  const counted = async (input: T): Promise<void> => {
    runs++;
    await property(input);
  };
  await fc.assert(fc.asyncProperty(arbitrary, counted), {
    seed,
    ...(timeMs === undefined
      ? { numRuns }
      : { numRuns: Number.MAX_SAFE_INTEGER, interruptAfterTimeLimit: timeMs, markInterruptAsFailure: false }),
    examples: examples.map((e) => [e] as [T]),
    reporter: (details) => {
      if (details.failed)
        throw new Error(`${target}: ${fc.defaultReportMessage(details)}\n(replay: SIGIL_FUZZ_SEED=${seed})`);
    },
  });
  return { runs };
}
