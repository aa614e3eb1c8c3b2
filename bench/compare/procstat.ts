import { readFileSync, readdirSync } from "node:fs";
import { execFileSync } from "node:child_process";

/**
 * CPU time and peak memory of a process tree, read from /proc: a proxy's cost is its master plus
 * every worker it forked (nginx, HAProxy), and a Node process's threads are all in its own stat.
 */

const CLOCK_TICKS = Number(execFileSync("getconf", ["CLK_TCK"]).toString().trim()) || 100;

interface StatLine {
  readonly pid: number;
  readonly ppid: number;
  /** utime + stime in clock ticks. */
  readonly ticks: number;
}

/** Fields after the parenthesised command name (which may itself contain spaces and parentheses). */
export function parseStat(text: string): StatLine {
  const close = text.lastIndexOf(")");
  const pid = Number(text.slice(0, text.indexOf(" ")));
  const rest = text.slice(close + 2).split(" ");
  // rest[0] is field 3 (state): ppid is field 4, utime 14, stime 15.
  const ppid = Number(rest[1]);
  const utime = Number(rest[11]);
  const stime = Number(rest[12]);
  if (!Number.isFinite(pid) || !Number.isFinite(ppid) || !Number.isFinite(utime) || !Number.isFinite(stime)) {
    throw new Error(`unparseable /proc stat line: ${text.slice(0, 120)}`);
  }
  return { pid, ppid, ticks: utime + stime };
}

/** A kB field (VmRSS, VmHWM, …) of a /proc/<pid>/status text in bytes, or 0 when absent (kernel threads). */
export function statusField(text: string, key: string): number {
  const m = new RegExp(`^${key}:\\s+(\\d+)\\s+kB$`, "m").exec(text);
  return m ? Number(m[1]) * 1024 : 0;
}

/** VmHWM in bytes from a /proc/<pid>/status text, or 0 for kernel threads without one. */
export function parseVmHwm(text: string): number {
  return statusField(text, "VmHWM");
}

function readStat(pid: number): StatLine | null {
  try {
    return parseStat(readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return null;
  }
}

/** `root` and all its descendants alive now. */
export function processTree(root: number): number[] {
  const children = new Map<number, number[]>();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const s = readStat(Number(entry));
    if (!s) continue;
    const list = children.get(s.ppid) ?? [];
    list.push(s.pid);
    children.set(s.ppid, list);
  }
  const out: number[] = [];
  const todo = [root];
  while (todo.length > 0) {
    const pid = todo.pop() as number;
    out.push(pid);
    todo.push(...(children.get(pid) ?? []));
  }
  return out;
}

/** CPU seconds (user + system) used so far by the process tree under `root`. */
export function cpuSeconds(root: number): number {
  let ticks = 0;
  for (const pid of processTree(root)) ticks += readStat(pid)?.ticks ?? 0;
  return ticks / CLOCK_TICKS;
}

/** Sum of the peak resident set (VmHWM) of every process in the tree under `root`, in bytes. */
export function peakRss(root: number): number {
  let bytes = 0;
  for (const pid of processTree(root)) {
    try {
      bytes += parseVmHwm(readFileSync(`/proc/${pid}/status`, "utf8"));
    } catch {
      // Exited between listing and reading.
    }
  }
  return bytes;
}

/** Resident, proportional and unique set sizes, in bytes. */
export interface MemoryReading {
  readonly rssBytes: number;
  readonly pssBytes: number;
  readonly ussBytes: number;
}

/**
 * The process tree's memory now, each size summed over its processes: PSS and USS add up where
 * RSS counts the pages a master shares with its workers (and every process the node binary) once
 * per process.
 */
export function memoryOf(root: number): MemoryReading {
  let rssBytes = 0;
  let pssBytes = 0;
  let ussBytes = 0;
  for (const pid of processTree(root)) {
    try {
      const rss = statusField(readFileSync(`/proc/${pid}/status`, "utf8"), "VmRSS");
      const { pssBytes: pss, ussBytes: uss } = proportionalMemory(pid);
      rssBytes += rss;
      pssBytes += pss;
      ussBytes += uss;
    } catch {
      // Exited between listing and reading.
    }
  }
  return { rssBytes, pssBytes, ussBytes };
}

/** Pss and Private_Clean + Private_Dirty (the USS) from /proc/<pid>/smaps_rollup, in bytes. */
export function proportionalMemory(pid: number | "self"): { pssBytes: number; ussBytes: number } {
  const text = readFileSync(`/proc/${pid}/smaps_rollup`, "utf8");
  const kb = (key: string): number =>
    Number(new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(text)?.[1] ?? 0) * 1024;
  return { pssBytes: kb("Pss"), ussBytes: kb("Private_Clean") + kb("Private_Dirty") };
}
