import type { Command } from "commander";
import { formatPolicyError } from "../../../core/policy/index.ts";
import type { PolicyDiff, PolicyFileView } from "../../../controlplane/policy-store/files.ts";
import { clientFor, processIo, run, table, warnUnanswered, withApiOption } from "../cli-support.ts";
import type { CliIo } from "../cli-support.ts";
import { CliError, EXIT, QuietExit } from "../exit-codes.ts";
import { outputFormat, printStructured, withOutputOption } from "../output.ts";
import { readPolicyInputs, validateInputs } from "../policy-input.ts";
import type { PolicyInput } from "../policy-input.ts";
import { printSimulation } from "../simulation-view.ts";
import { ApiError } from "../visibility-client.ts";
import { policyGroup } from "./policy.ts";

/**
 * Policy as code, in kubectl's habits: `sigil policy validate|diff|apply -f FILE|DIR|-`,
 * `sigil policy get [NAME]`, `sigil policy delete NAME`. A policy file is stored under its base
 * name; the control plane's watched directory holds the same files.
 */
export function register(program: Command, io: CliIo = processIo, stdin?: () => Promise<string>): void {
  const policy = policyGroup(program);
  const inputs = (opts: FileOptions) => readPolicyInputs(opts.file, opts.name, stdin);

  withFileOptions(
    policy
      .command("validate")
      .description(
        "check policy files offline (no control plane): every error names file, line, column and field",
      ),
  ).action(async (opts: FileOptions) => {
    const files = await inputs({ ...opts, name: opts.name ?? "stdin.yaml" });
    const { documents } = checked(files);
    io.out(`${files.length} files valid: ${documents.length} policies\n`);
  });

  withOutputOption(
    withApiOption(
      withFileOptions(
        policy
          .command("diff")
          .description(
            "what applying these files would change: policies added, changed, removed, and recorded flows whose verdict flips (exit 1 when anything would)",
          )
          .option("--since <time>", "recorded flows since a duration ago or a time (default: all retained)"),
      ),
    ),
    ["table", "json", "yaml"],
  ).action(async (opts: FileOptions & { since?: string; output: string }, cmd: Command) => {
    const format = outputFormat(opts, ["table", "json", "yaml"]);
    const files = await inputs(opts);
    checked(files);
    await run(async () => {
      const client = clientFor(cmd);
      const d = await client.diff(
        files.map((f) => ({ name: f.name, yaml: f.yaml })),
        opts.since,
      );
      if (!printStructured(io, format, d)) {
        printPolicyChanges(io, d);
        printSimulation(io, d.simulation);
      }
      warnUnanswered(io, client);
      const changes = d.added.length + d.changed.length + d.removed.length + d.simulation.changes.length;
      if (changes > 0) throw new QuietExit(EXIT.failure);
    });
  });

  withApiOption(
    withFileOptions(
      policy
        .command("apply")
        .description("store policy files on the control plane (with replicas: in etcd, for all of them)"),
    ),
  ).action(async (opts: FileOptions, cmd: Command) => {
    const files = await inputs(opts);
    checked(files);
    await run(async () => {
      const client = clientFor(cmd);
      // A policy moving from one file to another is refused (409) while the file it leaves still
      // defines it: such a file is tried again once the others are in, until a pass changes nothing.
      let pending = files;
      while (pending.length > 0) {
        const refused: PolicyInput[] = [];
        let conflict: ApiError | undefined;
        for (const f of pending) {
          try {
            const r = await client.applyPolicy(f.name, f.yaml);
            io.out(`applied ${r.name}: policy revision ${r.revision}\n`);
          } catch (err) {
            if (!(err instanceof ApiError && err.status === 409)) throw err;
            refused.push(f);
            conflict = err;
          }
        }
        if (conflict && refused.length === pending.length) throw conflict;
        pending = refused;
      }
    });
  });

  withOutputOption(
    withApiOption(
      policy
        .command("get [name]")
        .description("list the policy files on the control plane, or show one as written"),
    ),
  ).action(async (name: string | undefined, opts: { output: string }, cmd: Command) => {
    const format = outputFormat(opts);
    await run(async () => {
      const client = clientFor(cmd);
      const files = name ? [await client.policyFile(name)] : (await client.policyFiles()).files;
      if (format === "yaml") io.out(name ? (files[0]?.yaml ?? "") : files.map(asYamlStream).join(""));
      else if (format === "json") printStructured(io, format, name ? files[0] : files);
      else if (files.length === 0) io.err("no policy files\n");
      else io.out(table(fileRows(files, format === "wide")));
    });
  });

  withApiOption(
    policy.command("delete <name>").description("remove a policy file (and the policies it defines)"),
  ).action(async (name: string, _opts: unknown, cmd: Command) => {
    await run(async () => {
      const r = await clientFor(cmd).deletePolicy(name);
      io.out(`deleted ${r.name}: policy revision ${r.revision}\n`);
    });
  });
}

interface FileOptions {
  file: string[];
  name?: string;
}

function withFileOptions(cmd: Command): Command {
  return cmd
    .requiredOption(
      "-f, --file <file|dir|->",
      "a policy file, a directory of them (*.yaml, *.yml), or - for stdin (repeatable)",
      (value: string, previous: string[] | undefined) => [...(previous ?? []), value],
    )
    .option("--name <file.yaml>", "the file name stdin is stored as");
}

/** The files' documents, or exit 1 listing every problem (file:line:column: field: reason). */
function checked(files: readonly PolicyInput[]): ReturnType<typeof validateInputs> {
  const result = validateInputs(files);
  if (result.errors.length > 0)
    throw new CliError(
      `${result.errors.length} problems in the policy files:\n  ${result.errors.map(formatPolicyError).join("\n  ")}`,
      EXIT.failure,
    );
  return result;
}

function printPolicyChanges(io: CliIo, d: PolicyDiff): void {
  const rows = [
    ...d.added.map((c) => ["+", "added", c.kind, c.name, c.file]),
    ...d.changed.map((c) => ["~", "changed", c.kind, c.name, c.file]),
    ...d.removed.map((c) => ["-", "removed", c.kind, c.name, c.file]),
  ];
  if (rows.length === 0) io.out("policies: no change\n");
  else io.out(table([["", "CHANGE", "KIND", "NAME", "FILE"], ...rows]));
}

function fileRows(files: readonly PolicyFileView[], wide: boolean): string[][] {
  const header = ["NAME", "POLICIES", "STATUS", ...(wide ? ["DEFINES"] : [])];
  return [
    header,
    ...files.map((f) => [
      f.name,
      String(f.policies.length),
      f.errors.length === 0 ? "in effect" : `not in effect (${f.errors.length} errors)`,
      ...(wide ? [f.policies.map((p) => `${p.kind}/${p.name}`).join(",") || "-"] : []),
    ]),
  ];
}

/** Files as one YAML stream, each introduced by a comment naming it, its text as written. */
function asYamlStream(f: PolicyFileView, i: number): string {
  const text = f.yaml.endsWith("\n") || f.yaml === "" ? f.yaml : `${f.yaml}\n`;
  return `${i === 0 ? "" : "---\n"}# file: ${f.name}\n${text}`;
}
