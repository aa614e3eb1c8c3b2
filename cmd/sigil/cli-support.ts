import type { Command } from "commander";
import type { FlowRecord } from "../../core/flow.ts";
import { DEFAULT_TOKEN_FILE, loadApiCredential } from "./api-credential.ts";
import { apiFetch } from "./api-fetch.ts";
import { selectedContext } from "./cli-config.ts";
import { CliError } from "./exit-codes.ts";
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

/** Where a command's API calls go: address, admin token file and the CA that signs an HTTPS API. */
export interface ApiSettings {
  readonly url: string;
  readonly tokenFile?: string;
  readonly caFile?: string;
}

export interface ApiOptions {
  api?: string;
  tokenFile?: string;
  caFile?: string;
  context?: string;
}

/**
 * Adds `--api <url>`, `--token-file <path>`, `--ca-file <path>` and `--context <name>`. Each setting
 * comes from its flag, else its environment variable ($SIGIL_API, $SIGIL_TOKEN_FILE, $SIGIL_CA_FILE),
 * else the context (--context, $SIGIL_CONTEXT or the config file's current one), else the local
 * control plane's defaults.
 */
export function withApiOption(cmd: Command): Command {
  return cmd
    .option(
      "--api <url>",
      `control plane HTTP API; several replicas comma-separated (default: $SIGIL_API, the context's, else ${DEFAULT_API})`,
    )
    .option(
      "--token-file <path>",
      `file holding the API's admin token (default: $SIGIL_TOKEN_FILE, the context's, else ${DEFAULT_TOKEN_FILE})`,
    )
    .option(
      "--ca-file <path>",
      "CA certificates that sign an https API (default: $SIGIL_CA_FILE, the context's)",
    )
    .option(
      "--context <name>",
      "the config file's context to use (default: $SIGIL_CONTEXT, its current one)",
    );
}

export function apiSettings(opts: ApiOptions): ApiSettings {
  const ctx = selectedContext(opts.context);
  const tokenFile = opts.tokenFile || process.env.SIGIL_TOKEN_FILE || ctx?.["token-file"];
  const caFile = opts.caFile || process.env.SIGIL_CA_FILE || ctx?.["ca-file"];
  return {
    url: opts.api || process.env.SIGIL_API || ctx?.api || DEFAULT_API,
    ...(tokenFile ? { tokenFile } : {}),
    ...(caFile ? { caFile } : {}),
  };
}

export function clientFor(cmd: Command): VisibilityClient {
  const settings = apiSettings(cmd.optsWithGlobals<ApiOptions>());
  return new VisibilityClient(settings.url, loadApiCredential(settings), apiFetch(settings.caFile));
}

/** Says on stderr which replicas' flows the last answer lacks (they did not answer the replica asked). */
export function warnUnanswered(io: CliIo, client: VisibilityClient): void {
  for (const missing of client.unreachable)
    io.err(`replica ${missing} did not answer: its flows are not included\n`);
}

/** Runs an action and turns API failures into one readable error (with the server's details). */
export async function run(action: () => Promise<void>): Promise<void> {
  try {
    await action();
  } catch (err) {
    if (err instanceof ApiError) {
      const details = err.details.length > 0 ? `\n  ${err.details.join("\n  ")}` : "";
      throw new CliError(`${err.message}${details}`, err.exitCode, { cause: err });
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
