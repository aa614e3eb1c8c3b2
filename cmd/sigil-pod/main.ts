/**
 * The command inside the sidecar image (`/opt/sigil/app/sigil.mjs`, bundled by scripts/build-image.sh):
 * only what an injected pod runs — `init` (capture), `sidecar` and `ready` (its probe).
 */
// First: the sidecar caps its heap growth before the rest loads.
import "../../sidecar/proxy/heap-growth-first.ts";
import { Command, CommanderError } from "commander";
import { registerInitCommand } from "../sigil/commands/init.ts";
import { register as registerReady } from "../sigil/commands/ready.ts";
import { register as registerSidecar } from "../sigil/commands/sidecar.ts";

const program = new Command("sigil").description("Sigil's in-pod commands").exitOverride();
registerInitCommand(program);
registerSidecar(program);
registerReady(program);

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) process.exitCode = err.exitCode;
  else {
    process.stderr.write(`sigil: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  }
}
