import { readdir } from "node:fs/promises";
import { fileURLToPath, pathToFileURL } from "node:url";
import { join } from "node:path";
import { Command, CommanderError } from "commander";

/**
 * `sigil`: the operator CLI. Every file in `commands/` is a command group exporting
 * `register(program)`; they are discovered here, so adding a group never touches this file.
 */

type Register = (program: Command) => void;

const COMMANDS_DIR = fileURLToPath(new URL("./commands", import.meta.url));

async function loadGroups(program: Command): Promise<void> {
  const files = (await readdir(COMMANDS_DIR))
    .filter((f) => f.endsWith(".ts") && !f.endsWith(".test.ts"))
    .sort();
  for (const file of files) {
    const mod = (await import(pathToFileURL(join(COMMANDS_DIR, file)).href)) as { register?: Register };
    if (typeof mod.register !== "function")
      throw new Error(`CLI command group ${file} exports no register(program)`);
    mod.register(program);
  }
}

const program = new Command("sigil")
  .description("Sigil: identity-based workload security mesh")
  .showHelpAfterError()
  .exitOverride();

try {
  await loadGroups(program);
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) {
    process.exitCode = err.exitCode;
  } else {
    process.stderr.write(`sigil: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  }
}
