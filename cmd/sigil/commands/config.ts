import type { Command } from "commander";
import { processIo, table } from "../cli-support.ts";
import type { CliIo } from "../cli-support.ts";
import { configPath, loadConfigSync, saveConfig } from "../cli-config.ts";
import type { CliContext } from "../cli-config.ts";
import { CliError, EXIT } from "../exit-codes.ts";
import { outputFormat, printStructured, withOutputOption } from "../output.ts";

/** `sigil config get-contexts|current-context|use-context NAME|set-context NAME` over the CLI's config file. */
export function register(program: Command, io: CliIo = processIo): void {
  const config = program
    .command("config")
    .description(`named control planes (contexts) in the config file ($SIGIL_CONFIG, else ~/.sigil/config)`);

  withOutputOption(
    config.command("get-contexts").description("list the contexts; * marks the current one"),
  ).action((opts: { output: string }) => {
    const format = outputFormat(opts);
    const c = loadConfigSync();
    if (printStructured(io, format, c)) return;
    if (c.contexts.length === 0) {
      io.err(`no contexts in ${configPath()}\n`);
      return;
    }
    const wide = format === "wide";
    io.out(
      table([
        ["CURRENT", "NAME", "API", "TOKEN FILE", ...(wide ? ["CA FILE"] : [])],
        ...c.contexts.map((x) => [
          x.name === c["current-context"] ? "*" : "",
          x.name,
          x.api,
          x["token-file"] ?? "-",
          ...(wide ? [x["ca-file"] ?? "-"] : []),
        ]),
      ]),
    );
  });

  config
    .command("current-context")
    .description("print the current context's name")
    .action(() => {
      const current = loadConfigSync()["current-context"];
      if (!current) throw new CliError(`no current context in ${configPath()}`, EXIT.notFound);
      io.out(`${current}\n`);
    });

  config
    .command("use-context <name>")
    .description("make a context the current one")
    .action(async (name: string) => {
      const c = loadConfigSync();
      if (!c.contexts.some((x) => x.name === name))
        throw new CliError(`no context "${name}" in ${configPath()}`, EXIT.notFound);
      await saveConfig({ ...c, "current-context": name });
      io.out(`switched to context "${name}"\n`);
    });

  config
    .command("set-context <name>")
    .description("add a context or change the settings given (the others stay)")
    .option("--api <url>", "the control plane's HTTP API (several replicas comma-separated)")
    .option("--token-file <path>", "file holding its admin token")
    .option("--ca-file <path>", "CA certificates that sign its https API")
    .action(async (name: string, opts: { api?: string; tokenFile?: string; caFile?: string }) => {
      const c = loadConfigSync();
      const prior = c.contexts.find((x) => x.name === name);
      const api = opts.api ?? prior?.api;
      if (!api) throw new CliError(`a new context needs --api`, EXIT.usage);
      const next: CliContext = {
        ...prior,
        name,
        api,
        ...(opts.tokenFile ? { "token-file": opts.tokenFile } : {}),
        ...(opts.caFile ? { "ca-file": opts.caFile } : {}),
      };
      await saveConfig({
        ...c,
        contexts: prior ? c.contexts.map((x) => (x.name === name ? next : x)) : [...c.contexts, next],
      });
      io.out(`context "${name}" ${prior ? "modified" : "created"}\n`);
    });
}
