import { mkdir, rename, writeFile } from "node:fs/promises";
import { readFileSync } from "node:fs";
import { homedir } from "node:os";
import { dirname, join } from "node:path";
import { parse, stringify } from "yaml";
import { z } from "zod";
import { CliError, EXIT, UsageError } from "./exit-codes.ts";

/**
 * The CLI's config file (`$SIGIL_CONFIG`, else `~/.sigil/config`): named contexts, each a control
 * plane's API address with the admin token file and the CA file that signs its HTTPS certificate,
 * and the one in use. Flags and environment variables still win over the context.
 */

const context = z.strictObject({
  name: z.string().min(1),
  api: z.string().min(1),
  "token-file": z.string().min(1).optional(),
  "ca-file": z.string().min(1).optional(),
});

const configFile = z.strictObject({
  "current-context": z.string().optional(),
  contexts: z.array(context).default([]),
});

export type CliContext = z.infer<typeof context>;
export type CliConfig = z.infer<typeof configFile>;

export function configPath(): string {
  return process.env.SIGIL_CONFIG || join(homedir(), ".sigil", "config");
}

/** The config file, or an empty one when there is none; a broken file is an error naming the field. */
export function loadConfigSync(path = configPath()): CliConfig {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return { contexts: [] };
    throw new CliError(`cannot read the config file ${path}: ${(err as Error).message}`, EXIT.failure);
  }
  let raw: unknown;
  try {
    raw = parse(text) ?? {};
  } catch (err) {
    throw new CliError(`config file ${path} is not YAML: ${(err as Error).message}`, EXIT.failure);
  }
  const parsed = configFile.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new CliError(
      `config file ${path}: ${issue?.path.join(".") || "(top)"}: ${issue?.message ?? "invalid"}`,
      EXIT.failure,
    );
  }
  const names = new Set<string>();
  for (const c of parsed.data.contexts) {
    if (names.has(c.name))
      throw new CliError(`config file ${path}: context "${c.name}" is defined twice`, EXIT.failure);
    names.add(c.name);
  }
  return parsed.data;
}

/** Writes the config atomically, readable by its owner only (it names credential files). */
export async function saveConfig(config: CliConfig, path = configPath()): Promise<void> {
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  const tmp = `${path}.${process.pid}.tmp`;
  await writeFile(tmp, stringify(config), { mode: 0o600 });
  await rename(tmp, path);
}

/**
 * The context a command uses: `--context`, else `$SIGIL_CONTEXT`, else the file's current context;
 * none at all is fine (flags, environment and defaults then decide). A named one must exist.
 */
export function selectedContext(flag: string | undefined, config = loadConfigSync()): CliContext | undefined {
  const name = flag || process.env.SIGIL_CONTEXT || config["current-context"];
  if (!name) return undefined;
  const found = config.contexts.find((c) => c.name === name);
  if (!found)
    throw new UsageError(
      `no context "${name}" in ${configPath()} (contexts: ${config.contexts.map((c) => c.name).join(", ") || "none"})`,
    );
  return found;
}
