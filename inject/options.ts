import { isAbsolute } from "node:path";
import { DEFAULT_SETTINGS, injectSettings, type InjectRuntime, type InjectSettings } from "./settings.ts";

/** The `sigil inject` / `sigil webhook` flags that shape the injection, as commander gives them. */
export interface InjectFlags {
  image?: string;
  imagePullPolicy?: string;
  controlPlane?: string;
  trustDomain?: string;
  runtime?: string;
  hostDir?: string;
  bundleConfigMap?: string;
  tokenAudience?: string;
  sidecarLogLevel?: string;
}

export class InjectOptionsError extends Error {
  constructor(flag: string, reason: string) {
    super(`${flag}: ${reason}`);
    this.name = "InjectOptionsError";
  }
}

const HOST_PORT = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/;
const PULL = ["IfNotPresent", "Never", "Always"] as const;
const LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;

function runtimeOf(f: InjectFlags): InjectRuntime {
  const kind = f.runtime ?? "kubernetes";
  if (kind === "podman") {
    if (!f.hostDir) throw new InjectOptionsError("--host-dir", "required with --runtime podman");
    if (!isAbsolute(f.hostDir))
      throw new InjectOptionsError("--host-dir", `"${f.hostDir}" is not an absolute path`);
    return { kind: "podman", hostDir: f.hostDir.replace(/\/+$/, "") };
  }
  if (kind !== "kubernetes")
    throw new InjectOptionsError("--runtime", `"${kind}" is neither "kubernetes" nor "podman"`);
  if (f.hostDir) throw new InjectOptionsError("--host-dir", "only with --runtime podman");
  const base = DEFAULT_SETTINGS.runtime as Extract<InjectRuntime, { kind: "kubernetes" }>;
  return {
    ...base,
    ...(f.bundleConfigMap ? { bundleConfigMap: f.bundleConfigMap } : {}),
    ...(f.tokenAudience ? { tokenAudience: f.tokenAudience } : {}),
  };
}

/** Validates the flags into settings; each refusal names its flag. */
export function settingsFromFlags(f: InjectFlags): InjectSettings {
  const cp = f.controlPlane ?? DEFAULT_SETTINGS.controlPlane;
  const m = HOST_PORT.exec(cp);
  if (!m || Number(m[2]) < 1 || Number(m[2]) > 65535)
    throw new InjectOptionsError("--control-plane", `"${cp}" is not host:port`);
  const pull = f.imagePullPolicy ?? DEFAULT_SETTINGS.imagePullPolicy;
  if (!(PULL as readonly string[]).includes(pull))
    throw new InjectOptionsError("--image-pull-policy", `"${pull}" is not one of ${PULL.join(", ")}`);
  const level = f.sidecarLogLevel ?? DEFAULT_SETTINGS.logLevel;
  if (!(LEVELS as readonly string[]).includes(level))
    throw new InjectOptionsError("--sidecar-log-level", `"${level}" is not one of ${LEVELS.join(", ")}`);
  const td = f.trustDomain ?? DEFAULT_SETTINGS.trustDomain;
  if (!/^[a-z0-9._-]+$/.test(td))
    throw new InjectOptionsError("--trust-domain", `"${td}" is not a trust domain`);
  return injectSettings({
    image: f.image ?? DEFAULT_SETTINGS.image,
    imagePullPolicy: pull as InjectSettings["imagePullPolicy"],
    controlPlane: cp,
    trustDomain: td,
    logLevel: level as InjectSettings["logLevel"],
    runtime: runtimeOf(f),
  });
}

/** Adds the settings flags to a command (shared by `inject` and the webhook). */
export function withInjectFlags<C extends { option(flags: string, description: string): C }>(cmd: C): C {
  return cmd
    .option("--image <ref>", `sidecar image (default ${DEFAULT_SETTINGS.image})`)
    .option("--image-pull-policy <policy>", "IfNotPresent | Never | Always")
    .option(
      "--control-plane <host:port>",
      `control plane gRPC address as pods reach it (default ${DEFAULT_SETTINGS.controlPlane})`,
    )
    .option("--trust-domain <td>", "the mesh's trust domain (default sigil.local)")
    .option(
      "--runtime <kind>",
      "kubernetes (projected service-account token) | podman (host files, join tokens)",
    )
    .option("--host-dir <dir>", "podman: host directory with bundle/bundle.pem and tokens/<pod>/token")
    .option(
      "--bundle-config-map <name>",
      "kubernetes: ConfigMap holding bundle.pem (default sigil-trust-bundle)",
    )
    .option("--token-audience <aud>", "kubernetes: audience of the projected token (default sigil)")
    .option("--sidecar-log-level <level>", "the injected sidecar's log level");
}
