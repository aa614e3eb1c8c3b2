import { readFile, writeFile } from "node:fs/promises";
import type { Command } from "commander";
import { clientFor, processIo, run, warnUnanswered, withApiOption } from "../cli-support.ts";
import type { CliIo } from "../cli-support.ts";
import { CliError, EXIT, UsageError } from "../exit-codes.ts";
import { outputFormat, printStructured, withOutputOption } from "../output.ts";
import { checkFailOn, failOnOf, printSimulation } from "../simulation-view.ts";

/** `sigil policy suggest --since 1h [--exclude k=v]... [--output-file f]` and `sigil policy simulate -f new.yaml`. */
export function register(program: Command, io: CliIo = processIo): void {
  const policy = policyGroup(program);

  withOutputOption(
    withApiOption(
      policy
        .command("suggest")
        .description("suggest label-based policies that allow exactly the legitimate traffic observed")
        .option("--since <time>", "observed since a duration ago (30m, 1h, 7d) or a time", "1h")
        .option(
          "--exclude <k=v,...>",
          "treat traffic from sources with these labels as not legitimate (repeatable)",
          collect,
          [],
        )
        .option("--output-file <file>", "write the suggestion to a file instead of stdout"),
    ),
    ["yaml", "json"],
  ).action(
    async (opts: { since: string; exclude: string[]; output: string; outputFile?: string }, cmd: Command) => {
      if (opts.output !== "yaml" && opts.output !== "json")
        throw new UsageError(
          `-o now chooses the output format (yaml or json), not a file: to write the suggestion to ` +
            `${opts.output}, use --output-file ${opts.output}`,
        );
      const format = outputFormat(opts, ["yaml", "json"]);
      await run(async () => {
        const s = await clientFor(cmd).suggest(opts.since, opts.exclude);
        const m = s.summary;
        const header =
          `# Suggested by Sigil from ${m.used} of ${m.flows} flows since ${new Date(s.since).toISOString()}.\n` +
          `# Left out: ${m.callerReports} callers' egress reports (the callee decides), ${m.deniedInEnforce} denied in enforce mode, ${m.excluded} from excluded sources, ` +
          `${m.nonMeshPeer} with a non-mesh peer, ${m.noStableLabels} without stable labels, ` +
          `${m.unrepresentablePath} with unusable paths.\n` +
          `# Review, then apply; check first with: sigil policy diff -f <this file>\n`;
        const text =
          format === "json"
            ? `${JSON.stringify(s, null, 2)}\n`
            : s.yaml
              ? header + s.yaml
              : header + "# No legitimate traffic observed: nothing to suggest.\n";
        if (opts.outputFile) {
          await writeFile(opts.outputFile, text);
          io.err(`wrote ${opts.outputFile}\n`);
        } else io.out(text);
      });
    },
  );

  withOutputOption(
    withApiOption(
      policy
        .command("simulate")
        .description("list observed flows whose verdict would change if these policies were applied")
        .requiredOption(
          "-f, --file <file>",
          "policy YAML to apply (documents replace those of the same name)",
        )
        .option("--since <time>", "observed since a duration ago or a time (default: everything retained)")
        .option("--replace", "judge the file alone instead of merged into the policies in force")
        .option(
          "--fail-on <what>",
          "exit 4 when verdicts would change (change), only when some would be denied (deny), or never",
          "change",
        )
        .option("--json", "the same as -o json"),
    ),
    ["table", "json", "yaml"],
  ).action(
    async (
      opts: {
        file: string;
        since?: string;
        replace?: boolean;
        json?: boolean;
        failOn: string;
        output: string;
      },
      cmd: Command,
    ) => {
      const format = opts.json ? "json" : outputFormat(opts, ["table", "json", "yaml"]);
      const failOn = failOnOf(opts.failOn);
      await run(async () => {
        let yaml: string;
        try {
          yaml = await readFile(opts.file, "utf8");
        } catch (err) {
          throw new CliError(`cannot read ${opts.file}: ${(err as Error).message}`, EXIT.failure, {
            cause: err,
          });
        }
        const client = clientFor(cmd);
        const r = await client.simulate({
          yaml,
          file: opts.file,
          ...(opts.since ? { since: opts.since } : {}),
          ...(opts.replace ? { replace: true } : {}),
        });
        if (!printStructured(io, format, r)) printSimulation(io, r);
        warnUnanswered(io, client);
        checkFailOn(r, failOn);
      });
    },
  );
}

/** The `policy` group, shared by this file's commands and those of `policy-files.ts`. */
export function policyGroup(program: Command): Command {
  return (
    program.commands.find((c) => c.name() === "policy") ??
    program
      .command("policy")
      .description(
        "policy as code: validate, diff, apply, get, delete, import-networkpolicy, suggest, simulate",
      )
  );
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}
