import type { Command } from "commander";
import { clientFor, processIo, run, table, withApiOption } from "../cli-support.ts";
import type { CliIo } from "../cli-support.ts";
import { UsageError } from "../exit-codes.ts";
import { outputFormat, printStructured, withOutputOption } from "../output.ts";
import type { ModeView } from "../visibility-client.ts";

interface ScopeOptions {
  namespace?: string;
  workload?: string;
}

/**
 * `sigil mode` shows the enforcement modes; `sigil mode set <enforce|observe> [--namespace ns |
 * --workload spiffe-id]` changes one (mesh-wide without a scope); `sigil mode clear --namespace ns |
 * --workload id` removes an override.
 */
export function register(program: Command, io: CliIo = processIo): void {
  const mode = withOutputOption(
    withApiOption(
      program
        .command("mode")
        .description(
          "show or switch enforcement mode (enforce | observe): mesh-wide, per namespace, per workload",
        ),
    ),
    ["table", "json", "yaml"],
  ).action(async (opts: { output: string }, cmd: Command) => {
    const format = outputFormat(opts, ["table", "json", "yaml"]);
    await run(async () => {
      const view = await clientFor(cmd).mode();
      if (!printStructured(io, format, view)) print(io, view);
    });
  });

  withApiOption(
    mode
      .command("set <mode>")
      .description("set enforce or observe, mesh-wide or for one namespace or workload")
      .option("--namespace <ns>", "only this namespace")
      .option("--workload <spiffe-id>", "only this workload"),
  ).action(async (value: string, opts: ScopeOptions, cmd: Command) => {
    await run(async () => {
      if (value !== "enforce" && value !== "observe")
        throw new UsageError(`mode must be enforce or observe, not "${value}"`);
      const [scope, name] = scopeOf(opts, true);
      print(io, await clientFor(cmd).setMode(scope, name, value));
    });
  });

  withApiOption(
    mode
      .command("clear")
      .description("remove a namespace's or workload's own mode so the broader one applies")
      .option("--namespace <ns>", "this namespace")
      .option("--workload <spiffe-id>", "this workload"),
  ).action(async (opts: ScopeOptions, cmd: Command) => {
    await run(async () => {
      const [scope, name] = scopeOf(opts, false);
      print(io, await clientFor(cmd).setMode(scope, name, null));
    });
  });
}

function scopeOf(
  opts: ScopeOptions,
  meshAllowed: boolean,
): ["mesh" | "namespace" | "workload", string | undefined] {
  if (opts.namespace && opts.workload) throw new Error("give --namespace or --workload, not both");
  if (opts.namespace) return ["namespace", opts.namespace];
  if (opts.workload) return ["workload", opts.workload];
  if (!meshAllowed)
    throw new Error("give --namespace or --workload (the mesh-wide mode can be set, not cleared)");
  return ["mesh", undefined];
}

function print(io: CliIo, view: ModeView): void {
  const s = view.settings;
  io.out(`mesh-wide: ${s.mesh}\n`);
  for (const [ns, m] of Object.entries(s.namespaces)) io.out(`namespace ${ns}: ${m}\n`);
  for (const [id, m] of Object.entries(s.workloads)) io.out(`workload ${id}: ${m}\n`);
  if (view.workloads.length > 0) {
    io.out(
      "\n" +
        table([["WORKLOAD", "MODE", "FROM"], ...view.workloads.map((w) => [w.spiffeId, w.mode, w.from])]),
    );
  }
}
