import { isIPv4, isIPv6 } from "node:net";
import { APP_PORTS_ANNOTATION, INJECT_KEY, INJECTED_ANNOTATION } from "./constants.ts";
import { PodProblem } from "./errors.ts";

/** What a pod's `sigil.io/*` annotations ask of the injection, validated. */
export interface PodAnnotations {
  /** `sigil.io/app-ports`, set by an earlier podman injection. */
  readonly appPorts: readonly number[];
  /** `sigil.io/inject`: undefined when absent. */
  readonly inject: "enabled" | "disabled" | undefined;
  readonly excludeInboundPorts: readonly number[];
  readonly excludeOutboundPorts: readonly number[];
  readonly excludeOutboundCidrs: readonly string[];
  readonly httpPorts: readonly number[];
  readonly fastPathPorts: readonly number[];
  /** `sigil.io/user-access-ports`: application ports where people sign in (OpenID Connect). */
  readonly userAccessPorts: readonly number[];
  /** `sigil.io/user-access-config`: the Secret (podman: host directory) with the provider settings. */
  readonly userAccessConfig: string | undefined;
}

export const PORT_LIST_KEYS = {
  excludeInboundPorts: "sigil.io/exclude-inbound-ports",
  excludeOutboundPorts: "sigil.io/exclude-outbound-ports",
  httpPorts: "sigil.io/http-ports",
  fastPathPorts: "sigil.io/fast-path-ports",
  userAccessPorts: "sigil.io/user-access-ports",
} as const;
export const CIDR_LIST_KEY = "sigil.io/exclude-outbound-cidrs";
export const USER_ACCESS_CONFIG_KEY = "sigil.io/user-access-config";

const KNOWN = new Set<string>([
  INJECT_KEY,
  CIDR_LIST_KEY,
  USER_ACCESS_CONFIG_KEY,
  ...Object.values(PORT_LIST_KEYS),
]);
/** Written by the injection itself. */
const OWNED = new Set<string>([INJECTED_ANNOTATION, APP_PORTS_ANNOTATION]);

export const annotationField = (key: string): string => `metadata.annotations["${key}"]`;
const field = annotationField;
/** A Secret's name (RFC 1123 subdomain); on podman also a directory name, so never `..` or `/`. */
const OBJECT_NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

function items(text: string): string[] {
  return text
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "");
}

function portList(key: string, text: string): number[] {
  const ports: number[] = [];
  for (const item of items(text)) {
    const n = Number(item);
    if (!/^\d{1,5}$/.test(item) || n < 1 || n > 65535)
      throw new PodProblem(field(key), `"${item}" is not a port (1-65535) in the list "${text}"`);
    if (ports.includes(n)) throw new PodProblem(field(key), `port ${n} is listed twice`);
    ports.push(n);
  }
  return ports;
}

function cidrList(key: string, text: string): string[] {
  return items(text).map((item) => {
    const [address = "", prefix, extra] = item.split("/");
    const max = isIPv4(address) ? 32 : isIPv6(address) ? 128 : 0;
    const bits = Number(prefix);
    if (max === 0 || extra !== undefined || !/^\d{1,3}$/.test(prefix ?? "") || bits > max)
      throw new PodProblem(field(key), `"${item}" is not a CIDR (address/prefix) in the list "${text}"`);
    return item;
  });
}

/**
 * Reads the pod template's annotations. An unknown `sigil.io/` key is refused, since a misspelled
 * exclusion silently ignored would capture (or expose) traffic the user meant otherwise.
 */
export function readAnnotations(annotations: Readonly<Record<string, string>> | undefined): PodAnnotations {
  const a = annotations ?? {};
  for (const key of Object.keys(a)) {
    if (key.startsWith("sigil.io/") && !KNOWN.has(key) && !OWNED.has(key))
      throw new PodProblem(field(key), `unknown Sigil annotation (known: ${[...KNOWN].sort().join(", ")})`);
    if (key.startsWith("sigil.io/") && typeof a[key] !== "string")
      throw new PodProblem(field(key), "must be a string");
  }
  const inject = a[INJECT_KEY];
  if (inject !== undefined && inject !== "enabled" && inject !== "disabled")
    throw new PodProblem(field(INJECT_KEY), `"${inject}" is neither "enabled" nor "disabled"`);
  const ports = (k: keyof typeof PORT_LIST_KEYS): number[] => {
    const key = PORT_LIST_KEYS[k];
    return a[key] === undefined ? [] : portList(key, a[key]);
  };
  const result: PodAnnotations = {
    inject,
    appPorts:
      a[APP_PORTS_ANNOTATION] === undefined ? [] : portList(APP_PORTS_ANNOTATION, a[APP_PORTS_ANNOTATION]),
    excludeInboundPorts: ports("excludeInboundPorts"),
    excludeOutboundPorts: ports("excludeOutboundPorts"),
    excludeOutboundCidrs: a[CIDR_LIST_KEY] === undefined ? [] : cidrList(CIDR_LIST_KEY, a[CIDR_LIST_KEY]),
    httpPorts: ports("httpPorts"),
    fastPathPorts: ports("fastPathPorts"),
    userAccessPorts: ports("userAccessPorts"),
    userAccessConfig: userAccessConfig(a[USER_ACCESS_CONFIG_KEY]),
  };
  for (const key of [PORT_LIST_KEYS.httpPorts, PORT_LIST_KEYS.userAccessPorts] as const) {
    const listed = key === PORT_LIST_KEYS.httpPorts ? result.httpPorts : result.userAccessPorts;
    const both = listed.filter((p) => result.fastPathPorts.includes(p));
    if (both.length > 0)
      throw new PodProblem(
        field(PORT_LIST_KEYS.fastPathPorts),
        `port ${both.join(", ")} is also in ${key}: a fast-path port is never parsed as HTTP, choose one`,
      );
  }
  checkUserAccessPair(result);
  return result;
}

function userAccessConfig(name: string | undefined): string | undefined {
  if (name === undefined) return undefined;
  if (name.length > 253 || !OBJECT_NAME.test(name))
    throw new PodProblem(
      field(USER_ACCESS_CONFIG_KEY),
      `"${name}" is not a Secret name (RFC 1123 subdomain)`,
    );
  return name;
}

/** Sign-in needs both the ports and the provider: either alone would start a sidecar that cannot serve them. */
function checkUserAccessPair(a: PodAnnotations): void {
  if (a.userAccessPorts.length > 0 && a.userAccessConfig === undefined)
    throw new PodProblem(
      field(PORT_LIST_KEYS.userAccessPorts),
      `names no OpenID Connect provider: set ${USER_ACCESS_CONFIG_KEY} to the Secret holding user-access.yaml`,
    );
  if (a.userAccessConfig !== undefined && a.userAccessPorts.length === 0)
    throw new PodProblem(
      field(USER_ACCESS_CONFIG_KEY),
      `is set but ${PORT_LIST_KEYS.userAccessPorts} names no port to serve to people`,
    );
}
