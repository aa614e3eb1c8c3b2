import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { capHeapGrowth } from "../../sidecar/proxy/heap-growth.ts";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

/**
 * A process that keeps ~20 MB live and promotes garbage into the old generation the way a proxy
 * under load does (objects that outlive two scavenges, then die), and prints the largest old space
 * it reached.
 */
const CHURN = `
import v8 from "node:v8";
await import(${JSON.stringify(join(ROOT, "sidecar/proxy/heap-growth-first.ts"))});
const live = [];
for (let i = 0; i < 200_000; i++) live.push({ a: i, b: "x" + i, c: [i] });
const ring = new Array(20_000);
let maxOld = 0;
for (let n = 0; n < 2_000_000; n++) {
  ring[n % ring.length] = { n, s: "y" + n, pair: [n, n] };
  if (n % 10_000 === 0) {
    const old = v8.getHeapSpaceStatistics().find((s) => s.space_name === "old_space");
    maxOld = Math.max(maxOld, old.space_size);
  }
}
console.log(JSON.stringify({ maxOldMb: maxOld / 1e6, live: live.length }));
`;

/**
 * The churn's largest old space, with the cap imported first; `ownFlag` starts the process with
 * its own --heap-growing-percent (which the cap must leave alone), so both sides grow by a fixed
 * factor rather than one V8 picks from how fast this machine runs.
 */
function maxOldSpaceMb(ownFlag: string | null): number {
  const out = spawnSync(
    process.execPath,
    [
      "--max-semi-space-size=1",
      ...(ownFlag === null ? [] : [ownFlag]),
      "--import",
      "tsx",
      "--input-type=module",
      "-e",
      CHURN,
    ],
    { cwd: ROOT, encoding: "utf8", timeout: 60_000 },
  );
  if (out.status !== 0) throw new Error(`churn process failed: ${out.stderr}`);
  return (JSON.parse(out.stdout) as { maxOldMb: number }).maxOldMb;
}

describe("the sidecar's cap on old-generation growth", () => {
  it("keeps old space near what is live, and leaves a process started with its own factor alone", () => {
    const ownFourfold = maxOldSpaceMb("--heap-growing-percent=300");
    const capped = maxOldSpaceMb(null);
    expect(capped).toBeLessThan(ownFourfold / 1.5);
    expect(capped).toBeLessThan(80);
  }, 90_000);

  it("reads its own flag in either spelling, with or without a value", () => {
    expect(capHeapGrowth(["--heap-growing-percent=200"])).toBe(false);
    expect(capHeapGrowth(["--heap_growing_percent", "200"])).toBe(false);
  });

  it("is imported first by every entry point that runs a sidecar", () => {
    for (const entry of ["cmd/sigil/main.ts", "cmd/sigil-pod/main.ts", "bench/sidecar/sidecar-process.ts"]) {
      const firstImport = /^import\s[^;]*;/m.exec(readFileSync(join(ROOT, entry), "utf8"))?.[0];
      expect(firstImport, entry).toMatch(/heap-growth-first\.ts";$/);
    }
  });
});
