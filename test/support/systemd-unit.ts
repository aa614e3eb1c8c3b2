/**
 * Reads a systemd unit file as systemd does for what the examples use: sections, `Key=Value`
 * settings (a key may repeat), `#` and `;` comments, and an `Exec*=` line split into its argv
 * (whitespace-separated, double quotes grouping, a leading `-`/`+`/`@`/`!` prefix dropped).
 */
import { readFileSync } from "node:fs";

export interface SystemdUnit {
  readonly file: string;
  /** Every value a key was given in a section, in order. */
  all(section: string, key: string): string[];
  /** The key's last value (systemd's reading of a repeated plain setting), or undefined. */
  get(section: string, key: string): string | undefined;
}

export function readSystemdUnit(file: string): SystemdUnit {
  const settings = new Map<string, string[]>();
  let section = "";
  readFileSync(file, "utf8")
    .split("\n")
    .forEach((raw, i) => {
      const line = raw.trim();
      if (line === "" || line.startsWith("#") || line.startsWith(";")) return;
      const header = /^\[([A-Za-z]+)\]$/.exec(line);
      if (header) {
        section = header[1] as string;
        return;
      }
      const eq = line.indexOf("=");
      if (eq <= 0 || section === "") throw new Error(`${file}:${i + 1}: not a setting: ${line}`);
      const key = `${section}.${line.slice(0, eq).trim()}`;
      settings.set(key, [...(settings.get(key) ?? []), line.slice(eq + 1).trim()]);
    });
  return {
    file,
    all: (s, k) => settings.get(`${s}.${k}`) ?? [],
    get: (s, k) => settings.get(`${s}.${k}`)?.at(-1),
  };
}

/** An `Exec*=` value as the argv systemd runs. */
export function execArgv(value: string): string[] {
  const argv = [...value.matchAll(/"([^"]*)"|(\S+)/g)].map((m) => (m[1] ?? m[2]) as string);
  if (argv[0] !== undefined) argv[0] = argv[0].replace(/^[-+@!:]+/, "");
  return argv;
}

/** `Environment=` settings of a unit's [Service] section as one environment. */
export function unitEnvironment(unit: SystemdUnit): Record<string, string> {
  const env: Record<string, string> = {};
  for (const value of unit.all("Service", "Environment"))
    for (const [, k, v] of value.matchAll(/([A-Za-z_][A-Za-z0-9_]*)=("[^"]*"|\S*)/g))
      env[k as string] = (v as string).replace(/^"(.*)"$/, "$1");
  return env;
}
