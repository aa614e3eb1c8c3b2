import { isIP } from "node:net";
import { z } from "zod";
import { parseSpiffeId } from "../../core/identity.ts";
import type { Labels } from "../../core/labels.ts";
import { DirectoryLabels } from "../inputs/directory-labels.ts";
import type { MeshDestination } from "../inputs/sources.ts";

/**
 * Reads a decoded `sigil.v1.PeerDirectory` into the entries the outbound path looks up by original
 * destination (`address:port` → the mesh workload serving it and where its sidecar takes the mTLS
 * hop: the registered inbound port). Every workload address is paired with every application port
 * it registered.
 */

export class PeerDirectoryResourceError extends Error {
  constructor(
    readonly resource: string,
    readonly field: string,
    reason: string,
  ) {
    super(`PeerDirectory ${JSON.stringify(resource)} ${field}: ${reason}`);
    this.name = "PeerDirectoryResourceError";
  }
}

const MTLS = z.enum(["MTLS_MODE_UNSPECIFIED", "STRICT", "PERMISSIVE", "DISABLE"]);
const DATA_PATH = z.enum(["DATA_PATH_UNSPECIFIED", "L7_PROXY", "L4_FAST_PATH"]);

const workloadMessage = z.object({
  name: z.string(),
  spiffe_id: z.string(),
  labels: z.record(z.string(), z.string()).default({}),
  addresses: z.array(z.string()).default([]),
  ports: z
    .array(
      z.object({
        port: z.number().int().min(1).max(65535),
        mtls: MTLS.default("MTLS_MODE_UNSPECIFIED"),
        data_path: DATA_PATH.default("DATA_PATH_UNSPECIFIED"),
      }),
    )
    .default([]),
  /** Where the workload's sidecar takes the mTLS hop (0 = not registered). */
  inbound_port: z.number().int().min(0).max(65535).default(0),
});

/** Each workload is validated on its own, so one bad entry costs only itself. */
const directoryMessage = z.object({
  name: z.string().min(1),
  workloads: z.array(z.unknown()).default([]),
});

/**
 * `fastPath`: the destination takes callers on this port through the L4 fast path (its directory
 * data path is L4_FAST_PATH); otherwise they must come through the mTLS proxy.
 */
export type DirectoryEntry = readonly [{ address: string; port: number; fastPath: boolean }, MeshDestination];

/** Strips IPv6 brackets and an IPv4-mapped prefix so lookups match what sockets report. */
function canonicalAddress(address: string): string {
  const bare = address.startsWith("[") && address.endsWith("]") ? address.slice(1, -1) : address;
  const lower = bare.toLowerCase();
  return lower.startsWith("::ffff:") && isIP(lower.slice(7)) === 4 ? lower.slice(7) : lower;
}

/** A decoded directory: the destinations it gives, and each part of it that had to be left out. */
export interface DecodedDirectory {
  readonly entries: DirectoryEntry[];
  /** Every valid workload entry's labels by SPIFFE ID, those serving no port included. */
  readonly labels: DirectoryLabels;
  /** One line per rejected workload entry or address:port, naming the resource, field and reason. */
  readonly rejected: string[];
}

/**
 * Validates one decoded PeerDirectory and lists its destinations. `sidecarPort` is the inbound port
 * of the destination's sidecar when the directory does not name one (the mesh-wide convention).
 * Only a resource that is not a directory at all throws. A workload entry that breaks a rule is
 * left out, and an address:port claimed by two identities is left out for both (no one can tell
 * here which is right, and a destination is safer unknown than someone else's); each is listed in
 * `rejected`, so one bad entry never stops the rest of the mesh from being learned.
 */
export function decodePeerDirectory(
  message: unknown,
  options: { trustDomain: string; sidecarPort: number },
): DecodedDirectory {
  const parsed = directoryMessage.safeParse(message);
  const rawName =
    typeof (message as { name?: unknown } | null)?.name === "string"
      ? (message as { name: string }).name
      : "(unnamed)";
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new PeerDirectoryResourceError(
      rawName,
      issue?.path.join(".") || "message",
      issue?.message ?? "invalid",
    );
  }
  const rejected: string[] = [];
  const candidates: DirectoryEntry[] = [];
  const labels: [string, Labels][] = [];
  parsed.data.workloads.forEach((raw, i) => {
    try {
      const workload = workloadEntries(raw, i, rawName, options);
      labels.push([workload.spiffeId, workload.labels]);
      candidates.push(...workload.entries);
    } catch (err) {
      if (!(err instanceof PeerDirectoryResourceError)) throw err;
      rejected.push(err.message);
    }
  });
  const claimants = new Map<string, Set<string>>();
  for (const [key, dest] of candidates) {
    const id = `${key.address}:${key.port}`;
    const set = claimants.get(id) ?? new Set<string>();
    set.add(dest.identity.spiffeId);
    claimants.set(id, set);
  }
  const entries: DirectoryEntry[] = [];
  const reported = new Set<string>();
  for (const entry of candidates) {
    const id = `${entry[0].address}:${entry[0].port}`;
    const owners = claimants.get(id) as Set<string>;
    if (owners.size === 1) {
      entries.push(entry);
    } else if (!reported.has(id)) {
      reported.add(id);
      rejected.push(
        `PeerDirectory ${JSON.stringify(rawName)}: ${id} is claimed by ${[...owners].join(" and ")}; left out for all of them`,
      );
    }
  }
  return { entries, labels: DirectoryLabels.of(labels), rejected };
}

/** One workload entry's labels and destinations; throws PeerDirectoryResourceError naming the field. */
function workloadEntries(
  raw: unknown,
  i: number,
  rawName: string,
  options: { trustDomain: string; sidecarPort: number },
): { spiffeId: string; labels: Labels; entries: DirectoryEntry[] } {
  const parsed = workloadMessage.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new PeerDirectoryResourceError(
      rawName,
      `workloads[${i}]${issue?.path.length ? "." + issue.path.join(".") : ""}`,
      issue?.message ?? "invalid",
    );
  }
  const w = parsed.data;
  const id = parseSpiffeId(w.spiffe_id);
  if (!id)
    throw new PeerDirectoryResourceError(
      rawName,
      `workloads[${i}].spiffe_id`,
      `not a SPIFFE ID: ${w.spiffe_id}`,
    );
  if (id.trustDomain !== options.trustDomain)
    throw new PeerDirectoryResourceError(
      rawName,
      `workloads[${i}].spiffe_id`,
      `${w.spiffe_id} is outside trust domain ${options.trustDomain}`,
    );
  const entries: DirectoryEntry[] = [];
  const seen = new Set<string>();
  w.addresses.forEach((rawAddress, j) => {
    const address = canonicalAddress(rawAddress);
    if (isIP(address) === 0)
      throw new PeerDirectoryResourceError(
        rawName,
        `workloads[${i}].addresses[${j}]`,
        `not an IP address: ${rawAddress}`,
      );
    for (const p of w.ports) {
      const key = `${address}:${p.port}`;
      if (seen.has(key)) continue;
      seen.add(key);
      entries.push([
        { address, port: p.port, fastPath: p.data_path === "L4_FAST_PATH" },
        {
          identity: { spiffeId: w.spiffe_id, trustDomain: id.trustDomain, labels: { ...w.labels } },
          sidecar: { host: address, port: w.inbound_port || options.sidecarPort },
          mtls: p.mtls !== "DISABLE",
        },
      ]);
    }
  });
  return { spiffeId: w.spiffe_id, labels: w.labels, entries };
}
