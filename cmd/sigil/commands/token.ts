import type { Command } from "commander";
import { parseLabelList } from "../../../core/labels.ts";
import { processIo, withApiOption } from "../cli-support.ts";
import type { CliIo } from "../cli-support.ts";
import { apiTarget, identityApi, parseDuration } from "../identity-api.ts";
import { outputFormat, printStructured, withOutputOption, type OutputFormat } from "../output.ts";

const TOKEN_FORMATS: readonly OutputFormat[] = ["name", "json", "yaml"];

/** `sigil token create --labels k=v,... [--ttl 1h] [--name n] [--addresses ip,...] [-o name|json|yaml]` */
export function register(program: Command, io: CliIo = processIo): void {
  const token = program
    .command("token")
    .description("join tokens that let a VM process obtain its identity once");
  withOutputOption(
    withApiOption(
      token
        .command("create")
        .description("create a one-time join token scoped to a label set; the token is printed once")
        .requiredOption("--labels <k=v,...>", "labels the workload's identity will carry")
        .option("--ttl <duration>", "how long the token can be redeemed (30s, 15m, 1h, 7d)", "1h")
        .option(
          "--name <name>",
          "workload name: SPIFFE ID spiffe://<td>/workload/<name> (default: the app label)",
        )
        .option(
          "--addresses <ip,...>",
          "the VM's IP addresses: the workload owns them in the peer directory whoever else claims them",
        )
        .option("--json", "the same as -o json"),
    ),
    TOKEN_FORMATS,
  ).action(
    async (opts: {
      labels: string;
      ttl: string;
      name?: string;
      addresses?: string;
      json?: boolean;
      output: string;
      api: string;
      tokenFile?: string;
    }) => {
      const format = opts.json ? "json" : outputFormat(opts, TOKEN_FORMATS);
      const labels = parseLabelList(opts.labels);
      const name = opts.name ?? labels.app;
      if (!name) throw new Error("give --name, or an app=<name> label to name the workload after");
      const created = await identityApi<{ token: string; spiffeId: string; expiresAt: string }>(
        apiTarget(opts),
        "POST",
        "api/identity/tokens",
        {
          name,
          labels,
          addresses: opts.addresses ? opts.addresses.split(",").map((a) => a.trim()) : [],
          ttlSeconds: parseDuration(opts.ttl, "--ttl"),
        },
      );
      if (printStructured(io, format, created)) return;
      io.out(`${created.token}\n`);
      io.err(`one-time token for ${created.spiffeId}, valid until ${created.expiresAt}\n`);
    },
  );
}
