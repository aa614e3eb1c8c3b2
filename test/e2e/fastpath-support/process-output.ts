/**
 * Output of child processes the native and fast-path suites start (enforcers, probes, apps inside
 * namespaces made with test/support/netns.ts): every stdout line kept, bounded waits for a line,
 * JSON lines parsed.
 */
import type { ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";

export const REPO_ROOT = new URL("../../../", import.meta.url).pathname;

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
