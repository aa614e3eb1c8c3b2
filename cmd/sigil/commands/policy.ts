import { basename } from "node:path";
import { readFile, writeFile } from "node:fs/promises";
import type { Command } from "commander";
import { clientFor, endpointText, processIo, run, table, withApiOption } from "../cli-support.ts";
import type { CliIo } from "../cli-support.ts";

/** `sigil policy suggest --since 1h [--exclude k=v]... [-o file]` and `sigil policy simulate -f new.yaml`. */
export function register(program: Command, io: CliIo = processIo): void {
  const policy =
    program.commands.find((c) => c.name() === "policy") ??
    program.command("policy").description("policy tools");

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
      .option("-o, --output <file>", "write the YAML to a file instead of stdout"),
  ).action(async (opts: { since: string; exclude: string[]; output?: string }, cmd: Command) => {
    await run(async () => {
      const s = await clientFor(cmd).suggest(opts.since, opts.exclude);
      const m = s.summary;
      const header =
        `# Suggested by Sigil from ${m.used} of ${m.flows} flows since ${new Date(s.since).toISOString()}.\n` +
        `# Left out: ${m.deniedInEnforce} denied in enforce mode, ${m.excluded} from excluded sources, ` +
        `${m.nonMeshPeer} with a non-mesh peer, ${m.noStableLabels} without stable labels, ` +
        `${m.unrepresentablePath} with unusable paths.\n` +
        `# Review, then apply; check first with: sigil policy simulate -f <this file>\n`;
      const text = s.yaml
        ? header + s.yaml
        : header + "# No legitimate traffic observed: nothing to suggest.\n";
      if (opts.output) {
        await writeFile(opts.output, text);
        io.err(`wrote ${opts.output}\n`);
      } else io.out(text);
    });
  });

  withApiOption(
    policy
      .command("apply")
      .description("store a policy file on the control plane (with replicas: in etcd, for all of them)")
      .requiredOption("-f, --file <file>", "policy YAML; stored under its base name, replacing that file"),
  ).action(async (opts: { file: string }, cmd: Command) => {
    await run(async () => {
      let yaml: string;
      try {
        yaml = await readFile(opts.file, "utf8");
      } catch (err) {
        throw new Error(`cannot read ${opts.file}: ${(err as Error).message}`, { cause: err });
      }
      const r = await clientFor(cmd).applyPolicy(basename(opts.file), yaml);
      io.out(`applied ${r.name}: policy revision ${r.revision}\n`);
    });
  });

  withApiOption(
    policy
      .command("simulate")
      .description("list observed flows whose verdict would change if these policies were applied")
      .requiredOption("-f, --file <file>", "policy YAML to apply (documents replace those of the same name)")
      .option("--since <time>", "observed since a duration ago or a time (default: everything retained)")
      .option("--replace", "judge the file alone instead of merged into the policies in force")
      .option("--json", "print the full result as JSON"),
  ).action(
    async (opts: { file: string; since?: string; replace?: boolean; json?: boolean }, cmd: Command) => {
      await run(async () => {
        let yaml: string;
        try {
          yaml = await readFile(opts.file, "utf8");
        } catch (err) {
          throw new Error(`cannot read ${opts.file}: ${(err as Error).message}`, { cause: err });
        }
        const r = await clientFor(cmd).simulate({
          yaml,
          file: opts.file,
          ...(opts.since ? { since: opts.since } : {}),
          ...(opts.replace ? { replace: true } : {}),
        });
        if (opts.json) {
          io.out(`${JSON.stringify(r, null, 2)}\n`);
          return;
        }
        io.out(
          `${r.evaluated} observed flows: ${r.unchanged} unchanged, ${r.nowDenied} would now be denied, ${r.nowAllowed} would now be allowed\n`,
        );
        if (r.changes.length === 0) return;
        const rows = r.changes.map((c) => [
          `${c.before.verdict.toUpperCase()} -> ${c.after.verdict.toUpperCase()}`,
          `${endpointText(c.source)} -> ${endpointText(c.destination)}:${c.port}`,
          c.method ? `${c.method} ${c.path}` : "TCP",
          c.direction,
          `x${c.count}`,
          `by ${c.after.policy ?? "default"}`,
        ]);
        io.out(table([["CHANGE", "FLOW", "REQUEST", "SIDE", "COUNT", "NOW DECIDED"], ...rows]));
      });
    },
  );
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}
