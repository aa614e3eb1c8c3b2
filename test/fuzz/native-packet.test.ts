/**
 * The native packet and token parsers under libFuzzer with AddressSanitizer and
 * UndefinedBehaviorSanitizer (scripts/fuzz-native.sh, harness in native/fuzz/), for a bounded time
 * from the committed corpus: SIGIL_FUZZ_NATIVE_SECONDS (default 10) and SIGIL_FUZZ_SEED.
 */
import { execFile } from "node:child_process";
import { describe, expect, it } from "vitest";

const ROOT = new URL("../../", import.meta.url).pathname;
const SECONDS = Number(process.env.SIGIL_FUZZ_NATIVE_SECONDS ?? 10);

describe("fuzz: native packet and token parsers (libFuzzer, ASan, UBSan)", () => {
  it("finds no crash, leak, undefined behaviour or broken invariant", async () => {
    const result = await new Promise<{ code: number; stderr: string }>((resolve) => {
      execFile(
        "bash",
        [`${ROOT}scripts/fuzz-native.sh`, String(SECONDS)],
        { cwd: ROOT, timeout: 240_000, maxBuffer: 64 * 1024 * 1024 },
        (err, _stdout, stderr) =>
          resolve({ code: err ? ((err.code as number | undefined) ?? 1) : 0, stderr }),
      );
    });
    expect(result.code, result.stderr.slice(-6000)).toBe(0);
    expect(result.stderr).toMatch(/Done \d+ runs/);
  }, 300_000);
});
