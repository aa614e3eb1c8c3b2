import { spawn } from "node:child_process";
import type { ChildProcess, SpawnOptions } from "node:child_process";
import net from "node:net";

/**
 * Every process the harness starts goes through one Supervisor: each child leads its own process
 * group (so nginx and HAProxy workers die with their master), and `stopAll` runs on normal exit,
 * on errors and on SIGINT/SIGTERM, so a failed run leaves nothing listening behind it.
 */

export interface Supervised {
  readonly name: string;
  readonly proc: ChildProcess;
  readonly pid: number;
  /** The last lines of stderr/stdout, for error messages when the process dies early. */
  output(): string;
  exited(): boolean;
}

export class ProcessExitedError extends Error {
  override readonly name = "ProcessExitedError";
}

export class Supervisor {
  private readonly children = new Map<number, Supervised>();
  private readonly onSignal = (signal: NodeJS.Signals): void => {
    this.killAllNow();
    process.exit(signal === "SIGINT" ? 130 : 143);
  };
  private readonly onExit = (): void => this.killAllNow();

  constructor() {
    process.on("SIGINT", this.onSignal);
    process.on("SIGTERM", this.onSignal);
    process.on("exit", this.onExit);
  }

  start(name: string, command: string, args: readonly string[], options: SpawnOptions = {}): Supervised {
    const proc = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"], ...options, detached: true });
    proc.on("error", () => undefined);
    if (proc.pid === undefined) throw new ProcessExitedError(`${name}: could not start ${command}`);
    const pid = proc.pid;
    let tail = "";
    const keep = (chunk: Buffer): void => {
      tail = (tail + chunk.toString()).slice(-16_000);
    };
    proc.stdout?.on("data", keep);
    proc.stderr?.on("data", keep);
    let done = false;
    proc.on("exit", () => {
      done = true;
      this.children.delete(pid);
    });
    const child: Supervised = { name, proc, pid, output: () => tail, exited: () => done };
    this.children.set(pid, child);
    return child;
  }

  /** Resolves with the exit code (signal: null) once the child exits; rejects after `timeoutMs`, killing it. */
  async exitOf(child: Supervised, timeoutMs: number): Promise<number | null> {
    if (child.exited()) return child.proc.exitCode;
    let timer: NodeJS.Timeout | undefined;
    try {
      return await new Promise<number | null>((resolve, reject) => {
        child.proc.once("exit", (code) => resolve(code));
        timer = setTimeout(() => {
          signalGroup(child.pid, "SIGKILL");
          reject(new Error(`${child.name} still running after ${timeoutMs} ms: killed`));
        }, timeoutMs);
      });
    } finally {
      clearTimeout(timer);
    }
  }

  /** SIGTERM to the child's process group, SIGKILL after `graceMs` if it is still there. */
  async stop(child: Supervised, graceMs = 3000): Promise<void> {
    if (child.exited()) return;
    const gone = new Promise<void>((resolve) => child.proc.once("exit", () => resolve()));
    signalGroup(child.pid, "SIGTERM");
    const timer = setTimeout(() => signalGroup(child.pid, "SIGKILL"), graceMs);
    await gone;
    clearTimeout(timer);
    // Workers that outlive their master (they should not) go with the group.
    signalGroup(child.pid, "SIGKILL");
  }

  async stopAll(): Promise<void> {
    await Promise.all([...this.children.values()].map((c) => this.stop(c)));
  }

  /** Synchronous last resort (process exit handlers cannot wait). */
  killAllNow(): void {
    for (const child of this.children.values()) signalGroup(child.pid, "SIGKILL");
    this.children.clear();
  }

  dispose(): void {
    this.killAllNow();
    process.off("SIGINT", this.onSignal);
    process.off("SIGTERM", this.onSignal);
    process.off("exit", this.onExit);
  }
}

function signalGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // The group is already gone.
  }
}

/** Resolves once `host:port` accepts a TCP connection; rejects after `timeoutMs` or if `child` exits. */
export async function waitForPort(
  host: string,
  port: number,
  child: Supervised | null,
  timeoutMs = 10_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child?.exited())
      throw new ProcessExitedError(`${child.name} exited before listening on ${port}: ${child.output()}`);
    if (await canConnect(host, port)) return;
    if (Date.now() > deadline) {
      throw new Error(
        `${child?.name ?? "service"} not listening on ${host}:${port} after ${timeoutMs} ms: ${child?.output() ?? ""}`,
      );
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

function canConnect(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

/** Ports the kernel hands out for port 0, released again for the proxies' own configuration files. */
export async function freePorts(count: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from(
      { length: count },
      () =>
        new Promise<net.Server>((resolve, reject) => {
          const s = net.createServer();
          s.once("error", reject);
          s.listen(0, "127.0.0.1", () => resolve(s));
        }),
    ),
  );
  const ports = servers.map((s) => (s.address() as net.AddressInfo).port);
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  return ports;
}
