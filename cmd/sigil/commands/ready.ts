import type { Command } from "commander";
import { probeReady } from "../../../sidecar/agent/ready-probe.ts";

/** `sigil ready [--admin-port 15000]`: exit 0 when the local sidecar is ready (an injected pod's probe). */
export function register(program: Command): void {
  program
    .command("ready")
    .description("exit 0 when the sidecar in this network namespace is ready (its admin /ready is 200)")
    .option("--admin-port <port>", "the sidecar's admin port", "15000")
    .action(async (flags: { adminPort: string }) => {
      const port = Number(flags.adminPort);
      if (!/^\d{1,5}$/.test(flags.adminPort) || port < 1 || port > 65535)
        throw new Error(`--admin-port: "${flags.adminPort}" is not a port`);
      const { ready, detail } = await probeReady(port);
      process.stderr.write(`sigil ready: ${ready ? "ready" : "not ready"} (${detail})\n`);
      process.exitCode = ready ? 0 : 1;
    });
}
