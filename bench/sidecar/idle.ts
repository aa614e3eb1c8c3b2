/**
 * Idle footprint of a started sidecar: the real `sigil sidecar` command (the operator CLI,
 * cmd/sigil/main.ts, as bin/sigil.mjs runs it under tsx, or the image's in-pod command,
 * cmd/sigil-pod/main.ts) joins a real control plane on loopback with a join token, in explicit mode,
 * and becomes ready; after `--settle` seconds its heap is read after two forced collections
 * (memory-probe.ts) and its RSS, peak RSS, PSS and USS from /proc. Each run is a fresh process;
 * the table has every run and the median.
 * `--entry` may also name a bundle, such as the image's (`scripts/build-image.sh --output rootfs.tar`,
 * then opt/sigil/app/sigil.mjs from it), to measure the form that ships.
 * Usage: npx tsx bench/sidecar/idle.ts [--runs 3] [--settle 3] [--entry cli|pod|<file.mjs>]
 *        [--sidecar-flags "<node flags>"]
 */
import { spawn } from "node:child_process";
import { once } from "node:events";
import { existsSync, readFileSync } from "node:fs";
import { loadavg } from "node:os";
import { resolve } from "node:path";
import { createInterface } from "node:readline";
import { setTimeout as sleep } from "node:timers/promises";
import { proportionalMemory, statusField } from "../compare/procstat.ts";
import { SIDECAR_NODE_FLAGS } from "../../inject/constants.ts";
import type { MemoryReading } from "./sidecar-process.ts";
import { apiIngressPolicy } from "../../test/support/api-ingress.ts";
import { startTestControlPlane } from "../../test/support/control-plane.ts";

const args = process.argv.slice(2);
const option = (name: string): string | undefined => {
  const i = args.indexOf(`--${name}`);
  return i === -1 ? undefined : args[i + 1];
};
const RUNS = Number(option("runs") ?? 3);
const SETTLE_MS = Number(option("settle") ?? 3) * 1000;
const SIDECAR_FLAGS = (option("sidecar-flags") ?? SIDECAR_NODE_FLAGS.join(" ")).split(" ").filter((f) => f);
const ENTRIES: Record<string, string> = { cli: "cmd/sigil/main.ts", pod: "cmd/sigil-pod/main.ts" };
const READY_TIMEOUT_MS = 60_000;

const repo = new URL("../../", import.meta.url).pathname;
/** The file the sidecar runs: one of ENTRIES, or a bundle named by its path. */
const ENTRY = ((): string => {
  const given = option("entry") ?? "cli";
  const known = ENTRIES[given];
  if (known !== undefined) return `${repo}${known}`;
  const file = resolve(given);
  if (!existsSync(file))
    throw new Error(`--entry: ${given} is neither ${Object.keys(ENTRIES).join(" nor ")} nor a file`);
  return file;
})();

/** What one idle sidecar holds: the soak's memory reading without its traffic counters. */
type Reading = Omit<MemoryReading, "openFds" | "refusals">;

function statusBytes(pid: number, key: string): number {
  return statusField(readFileSync(`/proc/${pid}/status`, "utf8"), key);
}

/** Starts one sidecar, waits for its ready line and the settle time, and reads its memory. */
async function oneRun(grpcTarget: string, caPath: string, joinToken: string): Promise<Reading> {
  const child = spawn(
    process.execPath,
    [
      "--expose-gc",
      ...SIDECAR_FLAGS,
      "--import",
      "tsx",
      "--import",
      `${repo}bench/sidecar/memory-probe.ts`,
      ENTRY,
      "sidecar",
      ...["--control-plane", grpcTarget, "--control-plane-ca", caPath, "--join-token", joinToken],
      ...["--workload-name", "idle", "--mode", "explicit", "--inbound-port", "0", "--admin-port", "0"],
      ...["--log-level", "warn"],
    ],
    { stdio: ["ignore", "pipe", "inherit", "ipc"], cwd: repo },
  );
  try {
    const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream });
    const ready = (async () => {
      for await (const line of lines) if (line.includes('"ready"')) return;
      throw new Error("the sidecar exited before its ready line");
    })();
    await Promise.race([
      ready,
      sleep(READY_TIMEOUT_MS).then(() => {
        throw new Error(`no ready line within ${READY_TIMEOUT_MS} ms`);
      }),
    ]);
    await sleep(SETTLE_MS);
    const heap = new Promise<Omit<Reading, "rssBytes" | "peakRssBytes" | "pssBytes" | "ussBytes">>(
      (resolve) => {
        child.once("message", (m: { memory: Reading }) => resolve(m.memory));
      },
    );
    child.send({ memory: true });
    const h = await heap;
    const pid = child.pid as number;
    return {
      ...h,
      rssBytes: statusBytes(pid, "VmRSS"),
      peakRssBytes: statusBytes(pid, "VmHWM"),
      ...proportionalMemory(pid),
    };
  } finally {
    child.kill("SIGKILL");
    await once(child, "exit").catch(() => undefined);
  }
}

const mib = (bytes: number): string => (bytes / 2 ** 20).toFixed(1);
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;

async function run(): Promise<void> {
  const cp = await startTestControlPlane("sigil-idle-", {
    "api.yaml": apiIngressPolicy({ methods: ["GET"], paths: ["/"] }),
  });
  try {
    const rows: Reading[] = [];
    process.stdout.write(
      "| run | heap used MiB | heap total MiB | external MiB | RSS MiB | peak RSS MiB | PSS MiB | USS MiB |\n" +
        "| --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    const line = (label: string, r: Reading): void => {
      process.stdout.write(
        `| ${label} | ${mib(r.heapUsedBytes)} | ${mib(r.heapTotalBytes)} | ${mib(r.externalBytes)} | ` +
          `${mib(r.rssBytes)} | ${mib(r.peakRssBytes)} | ${mib(r.pssBytes)} | ${mib(r.ussBytes)} |\n`,
      );
    };
    for (let i = 1; i <= RUNS; i++) {
      const { token } = await cp.cp.identity.tokens.create({
        name: `idle-${i}`,
        labels: { app: "idle" },
        ttlSeconds: 600,
      });
      const r = await oneRun(cp.grpcTarget, cp.cp.bundlePath, token);
      rows.push(r);
      line(String(i), r);
    }
    const pick = (key: keyof Reading): number => median(rows.map((r) => r[key]));
    line("median", {
      heapUsedBytes: pick("heapUsedBytes"),
      heapTotalBytes: pick("heapTotalBytes"),
      externalBytes: pick("externalBytes"),
      rssBytes: pick("rssBytes"),
      peakRssBytes: pick("peakRssBytes"),
      pssBytes: pick("pssBytes"),
      ussBytes: pick("ussBytes"),
    });
    process.stdout.write(
      `\nentry ${ENTRY}, sidecar flags "${SIDECAR_FLAGS.join(" ")}", settle ${SETTLE_MS} ms, ` +
        `node ${process.version}, load average ${loadavg()
          .map((l) => l.toFixed(1))
          .join(" ")}\n`,
    );
  } finally {
    await cp.close();
  }
}

run().catch((err: Error) => {
  process.stderr.write(`${err.stack}\n`);
  process.exitCode = 1;
});
