import type { Command } from "commander";
import { registerInitCommand } from "../../../sidecar/capture/init.ts";

/** `sigil init`: what an init container or a VM setup step runs to capture a workload's traffic. */
export function register(program: Command): void {
  registerInitCommand(program);
}
