/**
 * The capture configuration `sigil init` applies (and a fast-path sidecar joins), from, in increasing
 * precedence: the `capture:` section of a YAML file, SIGIL_* environment variables, and flags.
 */
import { execFile } from "node:child_process";
import { readFile } from "node:fs/promises";
import { isMap, LineCounter, parseDocument } from "yaml";
import {
  CaptureConfigError,
  captureConfigSchema,
  parseCaptureConfig,
  type CaptureConfig,
  type CaptureConfigInput,
} from "./config.ts";

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

const maskText = (text: string, where: string): number => {
  const t = text.trim();
  if (!/^(0x[0-9a-f]{1,8}|\d{1,10})$/i.test(t))
    throw new CaptureConfigError(where, [`"${text}" is not a mark mask`]);
  return Number(t);
};

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
  {
    key: "fastPathMarkMask",
    flag: "fastPathMarkMask",
    env: "SIGIL_FAST_PATH_MARK_MASK",
    parse: maskText,
  },
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
async function fileLayer(path: string, lookup: NameLookup): Promise<RawLayer> {
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
  const resolved = await resolveIds(section as RawLayer, lookup);
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

/** How a user or group name becomes its id: the system's name service (`getent`) by default. */
export type NameLookup = (database: "passwd" | "group", name: string) => Promise<number>;

/** User and group names become ids; numeric text becomes a number. */
async function resolveIds(raw: RawLayer, lookup: NameLookup): Promise<RawLayer> {
  const out = { ...raw };
  const one = async (value: unknown, db: "passwd" | "group") =>
    typeof value === "string" && !/^\d+$/.test(value)
      ? lookup(db, value)
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
  /** Resolves user and group names (default `getent`, so NSS sources such as LDAP count too). */
  lookupName?: NameLookup;
}

/** Merges file, environment and flags (later wins) and validates the result. */
export async function loadCaptureConfig(sources: InitSources): Promise<CaptureConfig> {
  const lookup = sources.lookupName ?? getent;
  const file = sources.configFile ? await fileLayer(sources.configFile, lookup) : {};
  const merged = await resolveIds(
    {
      ...file,
      ...envLayer(sources.env),
      ...flagLayer(sources.flags, sources.givenOnCli),
    },
    lookup,
  );
  const origin = [sources.configFile, "environment", "flags"].filter(Boolean).join(" + ");
  return parseCaptureConfig(merged, origin);
}
