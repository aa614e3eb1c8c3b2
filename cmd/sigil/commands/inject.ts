import { readFile } from "node:fs/promises";
import type { Command } from "commander";
import { injectYaml } from "../../../inject/documents.ts";
import { settingsFromFlags, withInjectFlags, type InjectFlags } from "../../../inject/options.ts";

/** `sigil inject [-f file|-]`: Kubernetes YAML in, the same with Sigil's sidecar injected out (inject/). */
export function register(program: Command): void {
  withInjectFlags(
    program
      .command("inject")
      .description("add Sigil's capture init container and sidecar to Pods and workload templates")
      .option("-f, --filename <file>", "YAML to inject, `-` for stdin (default stdin)", "-"),
  ).action(async (flags: InjectFlags & { filename: string }) => {
    const settings = settingsFromFlags(flags);
    const stdin = flags.filename === "-";
    const text = stdin ? await readStdin() : await readFile(flags.filename, "utf8");
    const result = injectYaml(text, settings, stdin ? "stdin" : flags.filename);
    process.stdout.write(result.yaml);
    for (const r of result.report) process.stderr.write(`${r.object}: ${r.outcome}\n`);
  });
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}
