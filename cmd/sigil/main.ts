// First: the sidecar (`sigil sidecar`) caps its heap growth before the rest loads.
import "../../sidecar/proxy/heap-growth-first.ts";
import { CommanderError } from "commander";
import { CliError, EXIT } from "./exit-codes.ts";
import { sigilProgram, soleGroupFor } from "./program.ts";

/** `sigil`: the operator CLI (`program.ts` assembles its command groups; exit statuses: exit-codes.ts). */

try {
  const program = await sigilProgram(soleGroupFor(process.argv));
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) {
    // Commander has printed the problem (or the help that was asked for).
    process.exitCode = err.exitCode === 0 ? EXIT.ok : EXIT.usage;
  } else if (err instanceof CliError) {
    if (err.message !== "") process.stderr.write(`sigil: ${err.message}\n`);
    process.exitCode = err.exitCode;
  } else {
    process.stderr.write(`sigil: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = EXIT.failure;
  }
}
