import type { Command } from "commander";
import { formatFinding, NetworkPolicyError } from "../../../inject/networkpolicy/errors.ts";
import { importNetworkPolicies, renderImport } from "../../../inject/networkpolicy/import.ts";
import { processIo, type CliIo } from "../cli-support.ts";
import { CliError, EXIT, UsageError } from "../exit-codes.ts";
import { outputFormat, printStructured, withOutputOption } from "../output.ts";
import { readYamlInputs } from "../policy-input.ts";
import { policyGroup } from "./policy.ts";

interface ImportOptions {
  file: string[];
  namespace: string;
  strict?: boolean;
  output: string;
}

const NAMESPACE = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

/**
 * `sigil policy import-networkpolicy -f FILE|DIR|-`: Kubernetes NetworkPolicies in, Sigil policy
 * YAML out (`inject/networkpolicy/`). What cannot be expressed exactly is printed on stderr and as
 * comments beside each policy; with `--strict` it is an error and nothing is printed on stdout.
 */
export function register(program: Command, io: CliIo = processIo, stdin?: () => Promise<string>): void {
  withOutputOption(
    policyGroup(program)
      .command("import-networkpolicy")
      .description(
        "translate Kubernetes NetworkPolicies (networking.k8s.io/v1) into Sigil policies, saying what cannot be expressed exactly",
      )
      .requiredOption(
        "-f, --file <file|dir|->",
        "NetworkPolicy YAML (with Namespace objects to resolve namespace selectors), a directory of it, or - for stdin (repeatable)",
        (value: string, previous: string[] | undefined) => [...(previous ?? []), value],
      )
      .option("-n, --namespace <ns>", "namespace of a NetworkPolicy that names none", "default")
      .option("--strict", "refuse (exit 1) when any part cannot be expressed exactly"),
    ["yaml", "json"],
  ).action(async (opts: ImportOptions) => {
    const format = outputFormat(opts, ["yaml", "json"]);
    if (!NAMESPACE.test(opts.namespace))
      throw new UsageError(`--namespace: "${opts.namespace}" is not a namespace name`);
    const files = await readYamlInputs(opts.file, "stdin", "NetworkPolicy files", stdin);
    let result;
    try {
      result = importNetworkPolicies(
        files.map((f) => ({ name: f.stdin ? "stdin" : f.path, text: f.yaml })),
        opts.namespace,
      );
    } catch (err) {
      if (err instanceof NetworkPolicyError) throw new CliError(err.message, EXIT.failure, { cause: err });
      throw err;
    }
    const inexact = result.findings.filter((f) => f.kind === "approximated");
    if (opts.strict && inexact.length > 0)
      throw new CliError(
        `--strict: ${inexact.length} parts cannot be expressed exactly:\n  ${inexact.map(formatFinding).join("\n  ")}`,
        EXIT.failure,
      );
    for (const f of result.findings) io.err(`${formatFinding(f)}\n`);
    if (format === "json") printStructured(io, format, result);
    else io.out(renderImport(result));
  });
}
