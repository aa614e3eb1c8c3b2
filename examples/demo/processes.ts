/**
 * The demo's long-running processes (control plane, sidecars, applications): each one's output goes to
 * a log file, readiness is a line on stdout awaited with a deadline, and stopAll() ends them in reverse
 * start order — SIGTERM, then SIGKILL after a bounded grace period.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { createWriteStream, type WriteStream } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";

export class ProcessError extends Error {
  override name = "ProcessError";
}

export interface Managed {
  readonly name: string;
  readonly child: ChildProcess;
  readonly logFile: string;
  /** Resolves with the first stdout line matching `pattern`; rejects on exit or after `timeoutMs`. */
  waitForLine(pattern: RegExp, timeoutMs: number): Promise<RegExpMatchArray>;
  /** Resolves once the process has exited. */
  exited(): Promise<void>;
  running(): boolean;
  stop(signal?: NodeJS.Signals): Promise<void>;
}

const STOP_GRACE_MS = 8_000;

export class Supervisor {
  private readonly managed: Managed[] = [];
  private closed = false;
  /** If the demo exits without stopAll() (a second Ctrl-C, a crash), nothing it started outlives it. */
  private readonly exitHook = () => {
    for (const m of this.managed) if (m.running()) m.child.kill("SIGKILL");
  };

  constructor(private readonly logDir: string) {
    process.once("exit", this.exitHook);
  }

  start(
    name: string,
    argv: readonly string[],
    opts: { env?: NodeJS.ProcessEnv; cwd?: string } = {},
  ): Managed {
    // Start-up may still be under way when Ctrl-C has begun the cleanup: start nothing new then.
    if (this.closed) throw new ProcessError(`not starting ${name}: shutting down`);
    const [cmd, ...args] = argv;
    if (cmd === undefined) throw new ProcessError(`${name}: empty command`);
    const logFile = join(this.logDir, `${name}.log`);
    const log = createWriteStream(logFile, { flags: "a" });
    const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"], env: opts.env, cwd: opts.cwd });
    const lines: string[] = [];
    const waiters = new Set<(line: string) => void>();
    const exit = new Promise<void>((resolve) => {
      child.once("exit", () => resolve());
      child.once("error", (error) => {
        log.write(`cannot start: ${error.message}\n`);
        resolve();
      });
    });
    createInterface({ input: child.stdout! }).on("line", (line) => {
      log.write(`${line}\n`);
      lines.push(line);
      for (const waiter of waiters) waiter(line);
    });
    child.stderr!.on("data", (chunk: Buffer) => log.write(chunk));
    void exit.then(() => endLog(log));
    const running = () => child.exitCode === null && child.signalCode === null && child.pid !== undefined;
    const managed: Managed = {
      name,
      child,
      logFile,
      running,
      exited: () => exit,
      waitForLine: (pattern, timeoutMs) => {
        const seen = lines.map((line) => line.match(pattern)).find((m) => m !== null);
        if (seen) return Promise.resolve(seen);
        return new Promise((resolve, reject) => {
          const done = () => {
            clearTimeout(timer);
            waiters.delete(onLine);
          };
          const onLine = (line: string) => {
            const m = line.match(pattern);
            if (m) {
              done();
              resolve(m);
            }
          };
          const timer = setTimeout(() => {
            done();
            reject(new ProcessError(`${name} not ready after ${timeoutMs} ms (log: ${logFile})`));
          }, timeoutMs);
          waiters.add(onLine);
          void exit.then(() => {
            if (!waiters.has(onLine)) return;
            done();
            const how = child.signalCode ?? `exit code ${child.exitCode}`;
            reject(new ProcessError(`${name} ended (${how}) before it was ready (log: ${logFile})`));
          });
        });
      },
      stop: async (signal = "SIGTERM") => {
        if (!running()) return;
        child.kill(signal);
        const timer = setTimeout(() => child.kill("SIGKILL"), STOP_GRACE_MS);
        await exit;
        clearTimeout(timer);
      },
    };
    this.managed.push(managed);
    return managed;
  }

  list(): readonly Managed[] {
    return this.managed;
  }

  async stopAll(): Promise<void> {
    this.closed = true;
    for (const managed of [...this.managed].reverse()) await managed.stop();
    process.off("exit", this.exitHook);
  }
}

function endLog(log: WriteStream): void {
  if (!log.writableEnded) log.end();
}
