import { execFileSync } from "node:child_process";
import { cpus, loadavg, release } from "node:os";
import type { MachineInfo } from "./results.ts";

/** The machine a run happened on, with the versions of everything compared. */

/** First line a command prints on stdout or stderr (nginx -v answers on stderr). */
function versionOf(command: string): string {
  try {
    const out = execFileSync("sh", ["-c", `${command} 2>&1`], { encoding: "utf8" });
    return out.split("\n")[0]?.trim() || "unknown";
  } catch {
    return "not installed";
  }
}

export function cpuModel(lscpu: string): string {
  const m = /^Model name:\s+(.+)$/m.exec(lscpu);
  return m?.[1]?.trim() ?? "unknown";
}

export function machineInfo(): Omit<MachineInfo, "loadAfter"> {
  return {
    nproc: cpus().length,
    cpuModel: cpuModel(execFileSync("lscpu", { encoding: "utf8" })),
    kernel: release(),
    node: process.version,
    nginx: versionOf("nginx -v"),
    haproxy: versionOf("haproxy -v"),
    iperf3: versionOf("iperf3 --version"),
    openssl: versionOf("openssl version"),
    loadBefore: loadavg(),
  };
}
