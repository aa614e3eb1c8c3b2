import { execFile } from "node:child_process";
import { join } from "node:path";

/** The `sigil` CLI run as an operator runs it: a real process, its stdout, stderr and exit status. */

export interface CliResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

const CLI = join(import.meta.dirname, "../../cmd/sigil/main.ts");

export function runSigil(
  args: readonly string[],
  options: { env?: Record<string, string>; stdin?: string; cwd?: string } = {},
): Promise<CliResult> {
  return new Promise((resolve) => {
    const child = execFile(
      process.execPath,
      ["--import", "tsx", CLI, ...args],
      {
        cwd: options.cwd ?? join(import.meta.dirname, "../.."),
        timeout: 60_000,
        env: { ...process.env, ...options.env },
      },
      (err, stdout, stderr) =>
        resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
    child.stdin?.end(options.stdin ?? "");
  });
}
