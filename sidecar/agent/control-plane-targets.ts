import { lookup as dnsLookup } from "node:dns/promises";
import { isIP } from "node:net";

/**
 * The control-plane replicas a sidecar may talk to: `--control-plane a:15010,b:15010,c:15010`, or
 * one DNS name that resolves to several addresses (gRPC's resolver then tries each in turn).
 */

/** The host's resolver (getaddrinfo: /etc/hosts, then DNS), as `dns.lookup` with `all`. */
export type AddressLookup = (host: string) => Promise<readonly { address: string; family: number }[]>;

const systemLookup: AddressLookup = (host) => dnsLookup(host, { all: true });

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
 * One gRPC target for unary and flow calls over several replicas, for which gRPC takes only IP
 * addresses of one family: with several entries, each name is resolved now, and its addresses
 * (IPv4 when every name has one, else IPv6) take its place. One name stays a name, so gRPC's own
 * resolver follows its changes.
 */
export async function unaryTargetFor(
  targets: readonly string[],
  lookup: AddressLookup = systemLookup,
): Promise<string> {
  if (targets.length === 1 || targets.every((t) => isIP(hostOf(t)) !== 0)) return grpcTargetFor(targets);
  const resolved = await Promise.all(
    targets.map(async (t) => {
      const host = hostOf(t);
      const port = t.slice(t.lastIndexOf(":") + 1);
      if (isIP(host) !== 0) return [{ address: host, family: isIP(host), port }];
      let found;
      try {
        found = await lookup(host);
      } catch (err) {
        throw new Error(`control plane ${t}: ${host} does not resolve (${(err as Error).message})`, {
          cause: err,
        });
      }
      return found.map((a) => ({ address: a.address, family: a.family, port }));
    }),
  );
  const shared = (f: number) => resolved.every((r) => r.some((a) => a.family === f));
  const family = shared(4) ? 4 : shared(6) ? 6 : undefined;
  if (family === undefined)
    throw new Error(
      `control planes ${targets.join(",")}: no address family (IPv4 or IPv6) that every entry resolves to`,
    );
  const entries = resolved.flatMap((r) =>
    r
      .filter((a) => a.family === family)
      .map((a) => (family === 6 ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`)),
  );
  return grpcTargetFor([...new Set(entries)]);
}

function hostOf(target: string): string {
  return target.slice(0, target.lastIndexOf(":")).replace(/^\[(.*)\]$/, "$1");
}

/** One gRPC target over IP addresses of one family (or a single entry, which may be a name). */
function grpcTargetFor(targets: readonly string[]): string {
  if (targets.length === 1) return targets[0] as string;
  const hosts = targets.map(hostOf);
  const families = new Set(hosts.map((h) => isIP(h)));
  if (families.has(0) || families.size !== 1)
    throw new Error(`control planes ${targets.join(",")}: a list's addresses must all be IPv4 or all IPv6`);
  return `${families.has(6) ? "ipv6" : "ipv4"}:${targets.join(",")}`;
}
