import { readFile, readdir, stat } from "node:fs/promises";
import { basename, join } from "node:path";
import { checkPolicySet, parsePolicyDocuments } from "../../core/policy/index.ts";
import type { ParsedDocument, PolicyError } from "../../core/policy/index.ts";
import { CliError, EXIT, UsageError } from "./exit-codes.ts";

/**
 * The policy files a `-f FILE|DIR|-` names, read and checked on this machine: `policy validate`
 * needs nothing else, and `apply` / `diff` refuse to send what would not compile.
 */

/** One policy file: `name` is what it is stored as on the control plane, `path` where it was read. */
export interface PolicyInput {
  readonly name: string;
  readonly path: string;
  readonly yaml: string;
  /** Read from `-f -`. */
  readonly stdin?: boolean;
}

/** The files the control plane's watched directory would read: `*.yaml` / `*.yml`, no dotfiles. */
const POLICY_FILE = /^[^.].*\.ya?ml$/;

/**
 * Reads every `-f` value: a file, every policy file of a directory (not recursing), or `-` for
 * stdin (named `stdinName`, which apply and diff require). Two inputs of one name are refused.
 */
export async function readPolicyInputs(
  sources: readonly string[],
  stdinName: string | undefined,
  readStdin: () => Promise<string> = readAllStdin,
): Promise<PolicyInput[]> {
  if (sources.includes("-") && !stdinName)
    throw new UsageError("reading stdin (-f -): give --name <file.yaml> to name the file");
  const inputs = await readYamlInputs(sources, stdinName ?? "stdin", "policy files", readStdin);
  const seen = new Map<string, string>();
  for (const i of inputs) {
    const prior = seen.get(i.name);
    if (prior) throw new UsageError(`${prior} and ${i.path} would both be stored as ${i.name}`);
    seen.set(i.name, i.path);
  }
  return inputs;
}

/** The YAML files `-f FILE|DIR|-` names (a directory's `*.yaml` / `*.yml`, not recursing), in order. */
export async function readYamlInputs(
  sources: readonly string[],
  stdinName: string,
  /** What the files are, for the refusals (`policy files`). */
  what: string,
  readStdin: () => Promise<string> = readAllStdin,
): Promise<PolicyInput[]> {
  if (sources.length === 0) throw new UsageError(`give the ${what} with -f FILE|DIR|-`);
  const inputs: PolicyInput[] = [];
  for (const source of sources) {
    if (source === "-") {
      inputs.push({ name: stdinName, path: `${stdinName} (stdin)`, yaml: await readStdin(), stdin: true });
      continue;
    }
    if ((await statOf(source)).isDirectory()) {
      const names = (await readdir(source)).filter((n) => POLICY_FILE.test(n)).sort();
      if (names.length === 0) throw new CliError(`${source}: no *.yaml or *.yml ${what}`, EXIT.failure);
      for (const n of names)
        inputs.push({ name: n, path: join(source, n), yaml: await readText(join(source, n)) });
    } else {
      inputs.push({ name: basename(source), path: source, yaml: await readText(source) });
    }
  }
  return inputs;
}

/** Every problem of every file (file, line, column, field), and names defined in two of them. */
export function validateInputs(inputs: readonly PolicyInput[]): {
  documents: ParsedDocument[];
  errors: PolicyError[];
} {
  const documents: ParsedDocument[] = [];
  const errors: PolicyError[] = [];
  for (const input of inputs) {
    const parsed = parsePolicyDocuments(input.yaml, input.path);
    if (parsed.ok) documents.push(...parsed.documents);
    else errors.push(...parsed.errors);
  }
  errors.push(...checkPolicySet(documents));
  return { documents, errors };
}

async function statOf(path: string) {
  try {
    return await stat(path);
  } catch (err) {
    throw new CliError(`cannot read ${path}: ${(err as Error).message}`, EXIT.failure, { cause: err });
  }
}

async function readText(path: string): Promise<string> {
  try {
    return await readFile(path, "utf8");
  } catch (err) {
    throw new CliError(`cannot read ${path}: ${(err as Error).message}`, EXIT.failure, { cause: err });
  }
}

async function readAllStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}
