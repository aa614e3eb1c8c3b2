import { readdir } from "node:fs/promises";
import { fileURLToPath, pathToFileURL } from "node:url";
import { join } from "node:path";
import { Command } from "commander";
import type { ErrorOptions as CommanderErrorOptions } from "commander";
import { UsageError } from "./exit-codes.ts";

/**
 * The `sigil` program: every file in `commands/` is a command group exporting `register(program)`;
 * they are discovered here, so adding a group never touches this file. `main.ts` runs it; tests
 * parse command lines (the examples' systemd units) with it.
 */

type Register = (program: Command) => void;

const COMMANDS_DIR = fileURLToPath(new URL("./commands", import.meta.url));

async function loadGroups(program: Command, only: string | undefined): Promise<void> {
  const files = (await readdir(COMMANDS_DIR))
    .filter((f) => f.endsWith(".ts") && !f.endsWith(".test.ts") && (only === undefined || f === only))
    .sort();
  for (const file of files) {
    const mod = (await import(pathToFileURL(join(COMMANDS_DIR, file)).href)) as { register?: Register };
    if (typeof mod.register !== "function")
      throw new Error(`CLI command group ${file} exports no register(program)`);
    mod.register(program);
  }
}

/**
 * A command whose command-line errors (unknown option or command, missing argument or option value,
 * an argument too many) are the CLI's usage errors: printed as `sigil: <what is wrong>` with the
 * command's help to ask for, exit status 2, like the usage errors the commands raise themselves.
 */
class SigilCommand extends Command {
  override createCommand(name?: string): Command {
    return new SigilCommand(name);
  }

  override error(message: string, _options?: CommanderErrorOptions): never {
    throw new UsageError(`${message.replace(/^error: /, "")}\n(run '${this.path()} --help' for usage)`);
  }

  /** The words that name this command, from the program down: `sigil workload list`. */
  private path(): string {
    const names = [this.name()];
    for (let c = this.parent; c; c = c.parent) names.unshift(c.name());
    return names.join(" ");
  }
}

/**
 * The CLI with every command group registered, or only the group in the file `only` names (a
 * long-running command's process then holds none of the other groups' modules). Help (asked for, or
 * shown because a group was given no subcommand) throws a CommanderError instead of exiting;
 * command-line errors throw UsageError.
 */
export async function sigilProgram(only?: string): Promise<Command> {
  const program = new SigilCommand("sigil")
    .description("Sigil: identity-based workload security mesh")
    .exitOverride();
  await loadGroups(program, only);
  return program;
}

/**
 * The group file a command line needs alone: `sigil sidecar` runs for the workload's lifetime, and
 * every other group's modules (policy tooling, the CA, JOSE, X.509, …) would stay in its heap.
 */
export function soleGroupFor(argv: readonly string[]): string | undefined {
  return argv[2] === "sidecar" ? "sidecar.ts" : undefined;
}
