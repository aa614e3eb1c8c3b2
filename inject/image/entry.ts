/**
 * The command inside the sidecar image (`/opt/sigil/sigil.mjs`, bundled by scripts/build-image.sh):
 * only what an injected pod runs — `init` (capture), `sidecar` and `ready` (its probe).
 */
import { Command, CommanderError } from "commander";
import { register as registerReady } from "../../controlplane/cli/commands/ready.ts";
import { register as registerSidecar } from "../../controlplane/cli/commands/sidecar.ts";
import { registerInitCommand } from "../../sidecar/capture/init.ts";

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
