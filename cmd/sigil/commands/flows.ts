import type { Command } from "commander";
import { clientFor, flowLine, processIo, run, warnUnanswered, withApiOption } from "../cli-support.ts";
import type { CliIo } from "../cli-support.ts";
import { outputFormat, printStructured } from "../output.ts";
import type { FlowQuery } from "../visibility-client.ts";

interface FlowsOptions {
  follow?: boolean;
  denied?: boolean;
  selector?: string;
  since?: string;
  limit: string;
  json?: boolean;
  output: string;
}

/** `sigil flows [--follow] [--denied] [--selector k=v] [--since 1h] [--limit n] [--json]` */
export function register(program: Command, io: CliIo = processIo): void {
  withApiOption(
    program
      .command("flows")
      .description(
        "show recent flows (who talked to whom, verdict, deciding policy); --follow streams new ones",
      )
      .option("-f, --follow", "keep streaming new flows")
      .option("--denied", "only flows that were denied or would be denied")
      .option("-l, --selector <k=v,...>", "only flows whose source or destination has all these labels")
      .option("--since <time>", "only flows since a duration ago (30s, 15m, 1h, 7d) or a time")
      .option("-n, --limit <n>", "most recent flows to show", "50")
      .option("--json", "one JSON record per line"),
  )
    .option("-o, --output <format>", "table, wide (with the reason), json or yaml", "table")
    .action(async (opts: FlowsOptions, cmd: Command) => {
      const format = outputFormat(opts);
      await run(async () => {
        const client = clientFor(cmd);
        const q: FlowQuery = {
          ...(opts.denied ? { denied: true } : {}),
          ...(opts.selector ? { selector: opts.selector } : {}),
          ...(opts.since ? { since: opts.since } : {}),
          limit: Number(opts.limit),
        };
        // Streamed or --json: one JSON record per line, so a follower can act on each as it comes.
        const lines = opts.json || (opts.follow && (format === "json" || format === "yaml"));
        const print = (r: Parameters<typeof flowLine>[0]) =>
          io.out(`${lines ? JSON.stringify(r) : flowLine(r)}${format === "wide" ? `  ${r.reason}` : ""}\n`);
        if (!opts.follow) {
          const flows = await client.flows(q);
          if (!lines && printStructured(io, format, flows)) return;
          for (const r of flows) print(r);
          warnUnanswered(io, client);
          if (flows.length === 0 && !opts.json) io.err("no flows match\n");
          return;
        }
        const stop = new AbortController();
        const onSignal = () => stop.abort();
        process.once("SIGINT", onSignal);
        try {
          await client.follow(q, print, stop.signal, () => warnUnanswered(io, client));
        } finally {
          process.off("SIGINT", onSignal);
        }
      });
    });
}
