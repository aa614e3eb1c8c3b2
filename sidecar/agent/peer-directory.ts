import { isIP } from "node:net";
import { z } from "zod";
import { parseSpiffeId } from "../../core/identity.ts";
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

const directoryMessage = z.object({
  name: z.string().min(1),
  workloads: z
    .array(
      z.object({
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
      }),
    )
    .default([]),
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

/**
 * Validates one decoded PeerDirectory and lists its destinations. `sidecarPort` is the inbound port
 * of the destination's sidecar when the directory does not name one (the mesh-wide convention).
 */
export function decodePeerDirectory(
  message: unknown,
  options: { trustDomain: string; sidecarPort: number },
): DirectoryEntry[] {
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
  const entries: DirectoryEntry[] = [];
  const seen = new Map<string, string>();
  parsed.data.workloads.forEach((w, i) => {
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
    w.addresses.forEach((raw, j) => {
      const address = canonicalAddress(raw);
      if (isIP(address) === 0)
        throw new PeerDirectoryResourceError(
          rawName,
          `workloads[${i}].addresses[${j}]`,
          `not an IP address: ${raw}`,
        );
      for (const p of w.ports) {
        const key = `${address}:${p.port}`;
        const other = seen.get(key);
        if (other !== undefined && other !== w.spiffe_id)
          throw new PeerDirectoryResourceError(
            rawName,
            `workloads[${i}]`,
            `${key} is claimed by both ${other} and ${w.spiffe_id}`,
          );
        seen.set(key, w.spiffe_id);
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
  });
  return entries;
}
