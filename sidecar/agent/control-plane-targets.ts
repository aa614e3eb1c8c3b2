import { isIP } from "node:net";

/**
 * The control-plane replicas a sidecar may talk to: `--control-plane a:15010,b:15010,c:15010`, or
 * one DNS name that resolves to several addresses (gRPC's resolver then tries each in turn).
 */

const HOST_PORT = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/;

/** Splits and checks a comma-separated list of host:port; the message names the bad entry. */
export function controlPlaneProblem(value: string): string | undefined {
  const entries = value.split(",");
  for (const entry of entries) {
    const m = HOST_PORT.exec(entry.trim());
    if (!m) return `"${entry}" is not host:port`;
    if (Number(m[2]) > 65535) return `"${entry}": port out of range`;
  }
  return undefined;
}

export function controlPlaneTargets(value: string): string[] {
  return value
    .split(",")
    .map((e) => e.trim())
    .filter((e) => e !== "");
}

/**
 * One gRPC target for unary and flow calls over several replicas: grpc-js connects to the first
 * that answers and moves to another when it goes. gRPC can only list IP addresses in one target;
 * several names must be one DNS name with several addresses instead.
 */
export function grpcTargetFor(targets: readonly string[]): string {
  if (targets.length === 1) return targets[0] as string;
  const hosts = targets.map((t) => t.slice(0, t.lastIndexOf(":")).replace(/^\[(.*)\]$/, "$1"));
  const families = new Set(hosts.map((h) => isIP(h)));
  if (families.has(0) || families.size !== 1)
    throw new Error(
      `control planes ${targets.join(",")}: a list must be IP addresses of one family; for names, give one DNS name that resolves to every replica`,
    );
  return `${families.has(6) ? "ipv6" : "ipv4"}:${targets.join(",")}`;
}
