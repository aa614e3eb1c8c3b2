/**
 * Network-namespace helpers for the native and fast-path suites: unique names, commands run inside
 * a namespace, child processes started in it, and removal that always runs (a namespace's deletion
 * takes its interfaces, addresses and iptables rules with it).
 */
import { execFile, spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { createInterface } from "node:readline";
import { promisify } from "node:util";

const execFileAsync = promisify(execFile);

export const REPO_ROOT = new URL("../../../", import.meta.url).pathname;

/** `sg` + 6 hex characters: short enough for interface names with a suffix (≤ 15 characters). */
export function uniqueName(): string {
  return `sg${randomBytes(3).toString("hex")}`;
}

export async function run(cmd: string, args: readonly string[], timeoutMs = 15_000): Promise<string> {
  try {
    const { stdout } = await execFileAsync(cmd, args, { timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024 });
    return stdout;
  } catch (err) {
    const e = err as Error & { stderr?: string };
    throw new Error(`${cmd} ${args.join(" ")} failed: ${e.stderr?.trim() || e.message}`);
  }
}

export class Netns {
  private constructor(readonly name: string) {}

  static async create(name: string): Promise<Netns> {
    await run("ip", ["netns", "add", name]);
    const ns = new Netns(name);
    await ns.exec("ip", ["link", "set", "lo", "up"]);
    return ns;
  }

  exec(cmd: string, args: readonly string[], timeoutMs?: number): Promise<string> {
    return run("ip", ["netns", "exec", this.name, cmd, ...args], timeoutMs);
  }

  /** A long-running process inside the namespace, with its output collected. */
  spawn(cmd: string, args: readonly string[]): OutputLines {
    const child = spawn("ip", ["netns", "exec", this.name, cmd, ...args], { cwd: REPO_ROOT });
    return new OutputLines(child);
  }

  /** Node with tsx inside the namespace, for helpers that need sockets created there. */
  spawnNode(script: string, args: readonly string[]): OutputLines {
    return this.spawn(process.execPath, ["--import", "tsx", script, ...args]);
  }

  async destroy(): Promise<void> {
    await run("ip", ["netns", "del", this.name]).catch(() => undefined);
  }
}

/** Connects two namespaces with a veth pair and gives each end an address (and the IPv6 one, if given). */
export async function link(
  a: Netns,
  b: Netns,
  names: { a: string; b: string },
  addr: { a: string; b: string; a6?: string; b6?: string },
): Promise<void> {
  await run("ip", [
    "link",
    "add",
    names.a,
    "netns",
    a.name,
    "type",
    "veth",
    "peer",
    "name",
    names.b,
    "netns",
    b.name,
  ]);
  for (const [ns, dev, v4, v6] of [
    [a, names.a, addr.a, addr.a6],
    [b, names.b, addr.b, addr.b6],
  ] as const) {
    await ns.exec("ip", ["addr", "add", v4, "dev", dev]);
    if (v6) await ns.exec("ip", ["addr", "add", v6, "dev", dev, "nodad"]);
    await ns.exec("ip", ["link", "set", dev, "up"]);
  }
}

/**
 * Every stdout line of a child process, kept from its start, so a test can wait for a line that may
 * already have been printed. Waits are bounded and fail with the child's stderr for context.
 */
export class OutputLines {
  readonly lines: string[] = [];
  private stderr = "";
  private exited: number | null | undefined = undefined;
  private readonly waiters = new Set<() => void>();

  constructor(readonly child: ChildProcess) {
    if (!child.stdout || !child.stderr)
      throw new Error("OutputLines needs a child with piped stdout and stderr");
    createInterface({ input: child.stdout }).on("line", (line) => {
      this.lines.push(line);
      for (const w of this.waiters) w();
    });
    child.stderr.on("data", (chunk: Buffer) => {
      this.stderr = (this.stderr + chunk.toString()).slice(-8000);
    });
    child.on("exit", (code) => {
      this.exited = code;
      for (const w of this.waiters) w();
    });
  }

  get stderrText(): string {
    return this.stderr;
  }

  /** The first value `pick` returns for any line (past or future). */
  waitFor<T>(pick: (line: string) => T | undefined, timeoutMs = 10_000): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      let seen = 0;
      const check = (): void => {
        for (; seen < this.lines.length; seen++) {
          const value = pick(this.lines[seen] as string);
          if (value !== undefined) {
            finish();
            resolve(value);
            return;
          }
        }
        if (this.exited !== undefined) {
          finish();
          reject(
            new Error(
              `process exited (${this.exited}) before the expected output; stderr: ${this.stderr.trim()}`,
            ),
          );
        }
      };
      const timer = setTimeout(() => {
        finish();
        reject(
          new Error(`timed out after ${timeoutMs} ms waiting for output; stderr: ${this.stderr.trim()}`),
        );
      }, timeoutMs);
      const finish = (): void => {
        clearTimeout(timer);
        this.waiters.delete(check);
      };
      this.waiters.add(check);
      check();
    });
  }

  /** Resolves when the process has exited (bounded). */
  exit(timeoutMs = 10_000): Promise<number | null> {
    return this.waitFor(() => undefined, timeoutMs).then(
      () => this.exited ?? null,
      () => {
        if (this.exited !== undefined) return this.exited;
        throw new Error(`process did not exit within ${timeoutMs} ms`);
      },
    );
  }
}

/** Parses a JSON line, or undefined for lines that are not JSON objects. */
export function jsonLine(line: string): Record<string, unknown> | undefined {
  if (!line.startsWith("{")) return undefined;
  try {
    return JSON.parse(line) as Record<string, unknown>;
  } catch {
    return undefined;
  }
}
