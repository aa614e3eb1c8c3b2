/**
 * Running commands for the demo: one-shot commands with a deadline, and commands inside a network
 * namespace, optionally as another uid/gid.
 */
import { execFile } from "node:child_process";

export interface RunAs {
  uid: number;
  gid: number;
}

export interface ExecResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface ExecOptions {
  as?: RunAs;
  input?: string;
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
}

export class CommandError extends Error {
  constructor(
    readonly argv: readonly string[],
    readonly result: ExecResult,
  ) {
    const how = result.signal ?? `exit ${result.code}`;
    super(`command failed (${how}): ${argv.join(" ")}\n${result.stderr.trim()}`);
    this.name = "CommandError";
  }
}

const DEFAULT_TIMEOUT_MS = 20_000;

/** Runs argv and resolves with its outcome whatever the exit code; rejects only if it cannot start. */
export function run(argv: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
  const [cmd, ...args] = argv;
  if (cmd === undefined) throw new Error("run: empty command");
  return new Promise((resolve, reject) => {
    const child = execFile(
      cmd,
      args,
      {
        timeout: opts.timeoutMs ?? DEFAULT_TIMEOUT_MS,
        killSignal: "SIGKILL",
        maxBuffer: 64 * 1024 * 1024,
        env: opts.env ?? process.env,
        cwd: opts.cwd,
      },
      (error, stdout, stderr) => {
        if (error && typeof error.code === "string") {
          reject(new Error(`cannot run ${cmd}: ${error.message}`));
          return;
        }
        resolve({ code: child.exitCode, signal: child.signalCode, stdout, stderr });
      },
    );
    // A command that exits without reading its input closes the pipe first; that is not a failure.
    child.stdin?.on("error", () => undefined);
    child.stdin?.end(opts.input ?? "");
  });
}

/** Like run(), but rejects with a CommandError unless the command exits 0; resolves with stdout. */
export async function runOk(argv: readonly string[], opts: ExecOptions = {}): Promise<string> {
  const result = await run(argv, opts);
  if (result.code !== 0) throw new CommandError(argv, result);
  return result.stdout;
}

/**
 * The argv that runs `argv` in namespace `netns` (as `as`, with no supplementary groups). `caps` are
 * Linux capabilities the process keeps across the uid change (ambient), e.g. `net_admin` for a
 * sidecar that installs its own iptables rules and binds NFQUEUE for the L4 fast path.
 */
export function inNetns(
  netns: string,
  argv: readonly string[],
  as?: RunAs,
  caps: readonly string[] = [],
): string[] {
  const keep = caps.map((c) => `+${c}`).join(",");
  const user =
    as === undefined
      ? []
      : [
          "setpriv",
          `--reuid=${as.uid}`,
          `--regid=${as.gid}`,
          "--clear-groups",
          ...(caps.length > 0 ? [`--inh-caps=${keep}`, `--ambient-caps=${keep}`] : []),
          "--",
        ];
  return ["ip", "netns", "exec", netns, ...user, ...argv];
}
