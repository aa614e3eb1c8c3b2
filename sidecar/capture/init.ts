/**
 * `sigil init`: what an init container or a VM setup step runs to install (or remove) capture.
 * Configuration comes from, in increasing precedence: the `capture:` section of a YAML file, SIGIL_*
 * environment variables, and flags. `--dry-run` prints the rules instead of applying them.
 */
import { execFile } from "node:child_process";
import { readFile } from "node:fs/promises";
import type { Command } from "commander";
import { isMap, LineCounter, parseDocument } from "yaml";
import {
  CaptureApplyError,
  describePlan,
  installCapture,
  uninstallCapture,
  type CaptureTarget,
} from "./apply.ts";
import {
  CaptureConfigError,
  captureConfigSchema,
  parseCaptureConfig,
  type CaptureConfig,
  type CaptureConfigInput,
} from "./config.ts";
import { fastPathExternalRules } from "../fastpath/rules.ts";
import { renderCapture } from "./render.ts";

type RawLayer = Record<string, unknown>;

/** One setting that flags and environment can carry, and how its text becomes a config value. */
interface Setting {
  key: keyof CaptureConfigInput;
  flag: string;
  env: string;
  parse: (text: string, where: string) => unknown;
}

const portText = (text: string, where: string): number => {
  if (!/^\d{1,5}$/.test(text.trim())) throw new CaptureConfigError(where, [`"${text}" is not a port number`]);
  return Number(text);
};

const listOf =
  <T>(item: (text: string, where: string) => T) =>
  (text: string, where: string): T[] =>
    text
      .split(",")
      .map((part) => part.trim())
      .filter((part) => part !== "")
      .map((part) => item(part, where));

const idText = (text: string): number | string => (/^\d+$/.test(text.trim()) ? Number(text) : text.trim());

const boolText = (text: string, where: string): boolean => {
  if (/^(1|true|yes|on)$/i.test(text)) return true;
  if (/^(0|false|no|off)$/i.test(text)) return false;
  throw new CaptureConfigError(where, [`"${text}" is not true or false`]);
};

const SETTINGS: Setting[] = [
  { key: "mode", flag: "mode", env: "SIGIL_CAPTURE_MODE", parse: (t) => t },
  { key: "inboundPort", flag: "inboundPort", env: "SIGIL_INBOUND_PORT", parse: portText },
  { key: "outboundPort", flag: "outboundPort", env: "SIGIL_OUTBOUND_PORT", parse: portText },
  { key: "proxyUid", flag: "proxyUid", env: "SIGIL_PROXY_UID", parse: idText },
  { key: "proxyGid", flag: "proxyGid", env: "SIGIL_PROXY_GID", parse: idText },
  {
    key: "inboundPorts",
    flag: "inboundPorts",
    env: "SIGIL_INBOUND_PORTS",
    parse: (t, w) => (t.trim() === "*" ? "*" : listOf(portText)(t, w)),
  },
  {
    key: "excludeInboundPorts",
    flag: "excludeInboundPorts",
    env: "SIGIL_EXCLUDE_INBOUND_PORTS",
    parse: listOf(portText),
  },
  {
    key: "excludeOutboundPorts",
    flag: "excludeOutboundPorts",
    env: "SIGIL_EXCLUDE_OUTBOUND_PORTS",
    parse: listOf(portText),
  },
  {
    key: "excludeOutboundCidrs",
    flag: "excludeOutboundCidrs",
    env: "SIGIL_EXCLUDE_OUTBOUND_CIDRS",
    parse: listOf((t) => t),
  },
  { key: "captureUids", flag: "captureUids", env: "SIGIL_CAPTURE_UIDS", parse: listOf(idText) },
  { key: "outbound", flag: "outbound", env: "SIGIL_CAPTURE_OUTBOUND", parse: boolText },
  {
    key: "families",
    flag: "families",
    env: "SIGIL_IP_FAMILIES",
    parse: listOf((t, w) => {
      if (t === "4" || t === "6") return Number(t);
      throw new CaptureConfigError(w, [`"${t}" is not an IP family (4 or 6)`]);
    }),
  },
  { key: "backend", flag: "backend", env: "SIGIL_IPTABLES_BACKEND", parse: (t) => t },
  { key: "allowRootProxy", flag: "allowRootProxy", env: "SIGIL_ALLOW_ROOT_PROXY", parse: boolText },
];

const flagName = (key: string): string => `--${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;

function envLayer(env: NodeJS.ProcessEnv): RawLayer {
  const layer: RawLayer = {};
  for (const s of SETTINGS) {
    const text = env[s.env];
    if (text !== undefined && text !== "") layer[s.key] = s.parse(text, `environment ${s.env}`);
  }
  return layer;
}

/** Flags given on the command line (values left at their defaults do not override other sources). */
function flagLayer(flags: Record<string, unknown>, givenOnCli: (name: string) => boolean): RawLayer {
  const layer: RawLayer = {};
  for (const s of SETTINGS) {
    const value = flags[s.flag];
    if (value === undefined || !givenOnCli(s.flag)) continue;
    layer[s.key] = typeof value === "string" ? s.parse(value, `flag ${flagName(s.flag)}`) : value;
  }
  return layer;
}

/** The file's `capture:` section, checked on its own so each problem can name its line. */
async function fileLayer(path: string): Promise<RawLayer> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (error) {
    throw new CaptureConfigError(path, [`cannot read: ${(error as Error).message}`]);
  }
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false });
  if (doc.errors.length > 0) {
    throw new CaptureConfigError(
      path,
      doc.errors.map((e) => `line ${lineCounter.linePos(e.pos[0]).line}: ${e.message.split("\n")[0]}`),
    );
  }
  if (!isMap(doc.contents) || !doc.has("capture")) {
    throw new CaptureConfigError(path, ["no `capture:` section"]);
  }
  const section: unknown = doc.get("capture") === null ? {} : (doc.toJS() as { capture: unknown }).capture;
  if (typeof section !== "object" || section === null || Array.isArray(section)) {
    throw new CaptureConfigError(path, ["`capture:` must be a mapping"]);
  }
  const resolved = await resolveIds(section as RawLayer);
  const checked = captureConfigSchema.partial().safeParse(resolved);
  if (!checked.success) {
    throw new CaptureConfigError(
      path,
      checked.error.issues.map((issue) => {
        const node = doc.getIn(["capture", ...issue.path], true) as
          { range?: [number, number, number] } | undefined;
        const at = node?.range ? `line ${lineCounter.linePos(node.range[0]).line}: ` : "";
        return `${at}capture.${issue.path.map(String).join(".")}: ${issue.message}`;
      }),
    );
  }
  return resolved;
}

function getent(database: "passwd" | "group", name: string): Promise<number> {
  return new Promise((resolve, reject) => {
    execFile("getent", [database, name], { timeout: 5_000 }, (error, stdout) => {
      const id = Number(String(stdout).split(":")[2]);
      if (error || !Number.isInteger(id)) {
        reject(
          new CaptureConfigError("user lookup", [
            `no ${database === "passwd" ? "user" : "group"} named "${name}"`,
          ]),
        );
      } else {
        resolve(id);
      }
    });
  });
}

/** User and group names become ids; numeric text becomes a number. */
async function resolveIds(raw: RawLayer): Promise<RawLayer> {
  const out = { ...raw };
  const one = async (value: unknown, db: "passwd" | "group") =>
    typeof value === "string" && !/^\d+$/.test(value)
      ? getent(db, value)
      : typeof value === "string"
        ? Number(value)
        : value;
  if (out.proxyUid !== undefined) out.proxyUid = await one(out.proxyUid, "passwd");
  if (out.proxyGid !== undefined && out.proxyGid !== null) out.proxyGid = await one(out.proxyGid, "group");
  if (Array.isArray(out.captureUids)) {
    out.captureUids = await Promise.all(out.captureUids.map((u: unknown) => one(u, "passwd")));
  }
  return out;
}

export interface InitSources {
  /** Path of a YAML file with a `capture:` section. */
  configFile?: string;
  env: NodeJS.ProcessEnv;
  flags: Record<string, unknown>;
  /** Whether a flag was given on the command line (rather than left at its default). */
  givenOnCli: (name: string) => boolean;
}

/** Merges file, environment and flags (later wins) and validates the result. */
export async function loadCaptureConfig(sources: InitSources): Promise<CaptureConfig> {
  const file = sources.configFile ? await fileLayer(sources.configFile) : {};
  const merged = await resolveIds({
    ...file,
    ...envLayer(sources.env),
    ...flagLayer(sources.flags, sources.givenOnCli),
  });
  const origin = [sources.configFile, "environment", "flags"].filter(Boolean).join(" + ");
  return parseCaptureConfig(merged, origin);
}

/**
 * A sidecar running the L4 fast path with `--capture-config` adds its chains to capture's
 * transaction, and leaves them when it stops (new handshakes fail closed). Removing Sigil removes
 * them too: only their names matter here, so the rules are rendered for no ports.
 */
const FAST_PATH_CHAINS = fastPathExternalRules({
  inboundPorts: [],
  outboundPorts: [],
  queueFirst: 0,
  queueCount: 1,
  failOpen: false,
});

export interface InitOutcome {
  action: "dry-run" | "install" | "uninstall";
  config: CaptureConfig;
  output: string;
}

/** The command's whole job, without commander: resolve the config, then print, install or remove. */
export async function runInit(
  sources: InitSources,
  action: InitOutcome["action"],
  netns: string | undefined,
): Promise<InitOutcome> {
  const config = await loadCaptureConfig(sources);
  if (action === "dry-run") return { action, config, output: describePlan(renderCapture(config)) };
  const target: CaptureTarget = netns ? { backend: config.backend, netns } : { backend: config.backend };
  const applied =
    action === "install"
      ? await installCapture(config, target)
      : await uninstallCapture(config, target, [FAST_PATH_CHAINS]);
  const families = applied.map((a) => `IPv${a.family}`).join(", ");
  const verb = action === "install" ? "installed" : "removed";
  return {
    action,
    config,
    output: `sigil init: capture ${verb} for ${families} (backend ${config.backend})\n`,
  };
}

export function registerInitCommand(program: Command): Command {
  const cmd = program
    .command("init")
    .description("install the iptables rules that capture this workload's traffic (or remove them)")
    .option("-c, --config <file>", "YAML file with a `capture:` section (env SIGIL_CONFIG)")
    .option("--mode <mode>", "redirect | tproxy (env SIGIL_CAPTURE_MODE)")
    .option("--inbound-port <port>", "sidecar inbound port, default 15006 (env SIGIL_INBOUND_PORT)")
    .option("--outbound-port <port>", "sidecar outbound port, default 15001 (env SIGIL_OUTBOUND_PORT)")
    .option("--proxy-uid <uid|user>", "the sidecar's uid, exempt from capture (env SIGIL_PROXY_UID)")
    .option("--proxy-gid <gid|group>", "also require this gid for the exemption (env SIGIL_PROXY_GID)")
    .option(
      "--inbound-ports <ports>",
      "'*' or comma-separated ports to capture inbound (env SIGIL_INBOUND_PORTS)",
    )
    .option(
      "--exclude-inbound-ports <ports>",
      "inbound ports never captured (env SIGIL_EXCLUDE_INBOUND_PORTS)",
    )
    .option(
      "--exclude-outbound-ports <ports>",
      "outbound ports never captured (env SIGIL_EXCLUDE_OUTBOUND_PORTS)",
    )
    .option(
      "--exclude-outbound-cidrs <cidrs>",
      "destinations never captured (env SIGIL_EXCLUDE_OUTBOUND_CIDRS)",
    )
    .option("--capture-uids <uids>", "capture outbound only for these uids/users (env SIGIL_CAPTURE_UIDS)")
    .option("--no-outbound", "do not capture outbound traffic (env SIGIL_CAPTURE_OUTBOUND=false)")
    .option("--families <list>", "IP families, default 4,6 (env SIGIL_IP_FAMILIES)")
    .option("--backend <backend>", "auto | nft | legacy (env SIGIL_IPTABLES_BACKEND)")
    .option("--allow-root-proxy", "allow --proxy-uid 0 (exempts every root process)")
    .option("--netns <name>", "apply inside this named network namespace (env SIGIL_NETNS)")
    .option("--uninstall", "remove Sigil's chains, hooks and policy routing")
    .option("--dry-run", "print the rules instead of applying them")
    .action(async (flags: Record<string, unknown>) => {
      const env = process.env;
      const configFile = (flags.config as string | undefined) ?? (env.SIGIL_CONFIG || undefined);
      const action = flags.dryRun ? "dry-run" : flags.uninstall ? "uninstall" : "install";
      try {
        const outcome = await runInit(
          { configFile, env, flags, givenOnCli: (name) => cmd.getOptionValueSource(name) === "cli" },
          action,
          (flags.netns as string | undefined) ?? (env.SIGIL_NETNS || undefined),
        );
        process.stdout.write(outcome.output);
      } catch (error) {
        if (error instanceof CaptureConfigError || error instanceof CaptureApplyError) {
          process.stderr.write(`sigil init: ${error.message}\n`);
          process.exitCode = 1;
          return;
        }
        throw error;
      }
    });
  return cmd;
}
