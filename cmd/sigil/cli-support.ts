import type { Command } from "commander";
import type { FlowRecord } from "../../core/flow.ts";
import { DEFAULT_TOKEN_FILE, loadApiCredential } from "./api-credential.ts";
import { ApiError, VisibilityClient } from "./visibility-client.ts";

/** Shared pieces of the visibility CLI commands (flows, graph, policy, mode). */

export interface CliIo {
  readonly out: (text: string) => void;
  readonly err: (text: string) => void;
}

export const processIo: CliIo = {
  out: (text) => void process.stdout.write(text),
  err: (text) => void process.stderr.write(text),
};

export const DEFAULT_API = "http://127.0.0.1:15080";

/**
 * Adds `--api <url>` (default $SIGIL_API, else the local control plane) and `--token-file <path>`
 * (default $SIGIL_TOKEN_FILE, else the local control plane's token file).
 */
export function withApiOption(cmd: Command): Command {
  return cmd
    .option(
      "--api <url>",
      "control plane HTTP API; several replicas comma-separated",
      process.env.SIGIL_API ?? DEFAULT_API,
    )
    .option(
      "--token-file <path>",
      `file holding the API's admin token (default: $SIGIL_TOKEN_FILE, else ${DEFAULT_TOKEN_FILE})`,
    );
}

export function clientFor(cmd: Command): VisibilityClient {
  const opts = cmd.optsWithGlobals<{ api?: string; tokenFile?: string }>();
  return new VisibilityClient(opts.api ?? process.env.SIGIL_API ?? DEFAULT_API, loadApiCredential(opts));
}

/** Runs an action and turns API failures into one readable error (with the server's details). */
export async function run(action: () => Promise<void>): Promise<void> {
  try {
    await action();
  } catch (err) {
    if (err instanceof ApiError) {
      const details = err.details.length > 0 ? `\n  ${err.details.join("\n  ")}` : "";
      throw new Error(`${err.message}${details}`, { cause: err });
    }
    throw err;
  }
}

export function endpointText(e: FlowRecord["source"]): string {
  return e.spiffeId ?? (e.address ? `${e.address} (outside the mesh)` : "(unknown)");
}

export function verdictText(r: Pick<FlowRecord, "verdict" | "wouldDeny">): string {
  if (r.verdict === "deny") return "DENY";
  return r.wouldDeny ? "WOULD-DENY" : "ALLOW";
}

export function flowLine(r: FlowRecord): string {
  const t = new Date(r.time).toISOString().replace("T", " ").replace("Z", "");
  const request = r.http ? `${r.http.method} ${r.http.path}` : r.protocol.toUpperCase();
  return [
    t,
    verdictText(r).padEnd(10),
    `${endpointText(r.source)} -> ${endpointText(r.destination)}:${r.port}`,
    request,
    `policy=${r.policy ?? "default"}`,
    r.encrypted ? "mTLS" : "plaintext",
    `(${r.direction}, ${r.reporter.kind})`,
  ].join("  ");
}

/** Left-aligned columns. */
export function table(rows: readonly (readonly string[])[]): string {
  const widths: number[] = [];
  for (const row of rows) row.forEach((cell, i) => (widths[i] = Math.max(widths[i] ?? 0, cell.length)));
  return (
    rows
      .map((row) =>
        row.map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i] ?? 0))).join("  "),
      )
      .join("\n") + "\n"
  );
}
