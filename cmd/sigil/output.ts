import type { Command } from "commander";
import { stringify } from "yaml";
import type { CliIo } from "./cli-support.ts";
import { UsageError } from "./exit-codes.ts";

/**
 * `-o, --output <format>` as kubectl has it, for every command that lists or gets: `table` (the
 * default, for people), `wide` (more columns), `json` and `yaml` (the full objects, for scripts);
 * `name` where a command makes one thing and prints what names it (a token).
 */
export type OutputFormat = "table" | "wide" | "json" | "yaml" | "name";

export const ALL_FORMATS: readonly OutputFormat[] = ["table", "wide", "json", "yaml"];

export function withOutputOption(
  cmd: Command,
  formats: readonly OutputFormat[] = ALL_FORMATS,
  fallback: OutputFormat = formats[0] ?? "table",
): Command {
  return cmd.option("-o, --output <format>", `output format: ${formats.join(", ")}`, fallback);
}

/** The format a command was asked for; anything it does not offer is a usage error naming the choices. */
export function outputFormat(
  opts: { output?: string },
  formats: readonly OutputFormat[] = ALL_FORMATS,
): OutputFormat {
  const asked = opts.output ?? formats[0] ?? "table";
  if ((formats as readonly string[]).includes(asked)) return asked as OutputFormat;
  throw new UsageError(`-o/--output must be one of ${formats.join(", ")}, not "${asked}"`);
}

/** Prints `value` as JSON or YAML; true when the format was one of those (so the caller is done). */
export function printStructured(io: CliIo, format: OutputFormat, value: unknown): boolean {
  if (format === "json") io.out(`${JSON.stringify(value, null, 2)}\n`);
  else if (format === "yaml") io.out(stringify(value, { aliasDuplicateObjects: false }));
  else return false;
  return true;
}
