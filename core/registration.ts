import { isIP } from "node:net";

/**
 * How a sidecar tells the control plane where its workload is reachable: fields of the ADS node
 * metadata (`google.protobuf.Struct`) of its stream. The stream is authorized as the SPIFFE ID of
 * the sidecar's client certificate, so a registration is as trustworthy as the identity that
 * carries it, and it lasts while the control plane runs (a reconnect simply repeats it).
 *
 * Every value is a string (lists comma-separated): the xDS client's node metadata holds scalars
 * only, and strings are the one kind that survives the Struct round trip intact.
 */
export const REGISTRATION_METADATA = {
  /** The workload's IP addresses (v4 or v6), e.g. "198.18.0.2,2001:db8::2". */
  addresses: "sigil.addresses",
  /** The application ports the sidecar protects inbound, e.g. "8080,9090". */
  appPorts: "sigil.app_ports",
  /** Of those, the ports the sidecar enforces in the TCP handshake (L4 fast path). */
  fastPathPorts: "sigil.fast_path_ports",
  /** The sidecar's inbound listener port (where callers open the mTLS hop). */
  inboundPort: "sigil.inbound_port",
} as const;

export const DEFAULT_INBOUND_PORT = 15006;

export interface Registration {
  readonly addresses: readonly string[];
  readonly appPorts: readonly number[];
  readonly fastPathPorts: readonly number[];
  readonly inboundPort: number;
}

export class RegistrationError extends Error {
  constructor(
    readonly field: string,
    reason: string,
  ) {
    super(`node metadata ${field}: ${reason}`);
  }
}

const MAX_ENTRIES = 64;

/** The node metadata a sidecar sends for a registration (the inverse of `registrationFromMetadata`). */
export function registrationMetadata(r: Registration): Record<string, string> {
  return {
    [REGISTRATION_METADATA.addresses]: r.addresses.join(","),
    [REGISTRATION_METADATA.appPorts]: r.appPorts.join(","),
    [REGISTRATION_METADATA.fastPathPorts]: r.fastPathPorts.join(","),
    [REGISTRATION_METADATA.inboundPort]: String(r.inboundPort),
  };
}

/**
 * Reads a registration from node metadata. Metadata without any registration field yields null (a
 * workload that only wants its configuration); a malformed field throws `RegistrationError`, which
 * refuses the stream rather than publishing a half-understood address.
 */
export function registrationFromMetadata(metadata: Readonly<Record<string, unknown>>): Registration | null {
  const keys = Object.values(REGISTRATION_METADATA);
  if (!keys.some((k) => metadata[k] !== undefined)) return null;
  const addresses = list(metadata, REGISTRATION_METADATA.addresses).map((a) => {
    if (isIP(a) === 0)
      throw new RegistrationError(REGISTRATION_METADATA.addresses, `"${a}" is not an IP address`);
    return a.toLowerCase();
  });
  const appPorts = list(metadata, REGISTRATION_METADATA.appPorts).map((p) =>
    port(p, REGISTRATION_METADATA.appPorts),
  );
  const fastPathPorts = list(metadata, REGISTRATION_METADATA.fastPathPorts).map((p) =>
    port(p, REGISTRATION_METADATA.fastPathPorts),
  );
  for (const p of fastPathPorts) {
    if (!appPorts.includes(p))
      throw new RegistrationError(REGISTRATION_METADATA.fastPathPorts, `${p} is not one of the app ports`);
  }
  const rawInbound = metadata[REGISTRATION_METADATA.inboundPort];
  const inboundPort =
    rawInbound === undefined || rawInbound === null
      ? DEFAULT_INBOUND_PORT
      : port(String(rawInbound), REGISTRATION_METADATA.inboundPort);
  if (appPorts.includes(inboundPort))
    throw new RegistrationError(REGISTRATION_METADATA.inboundPort, `${inboundPort} is also an app port`);
  return {
    addresses: unique(addresses),
    appPorts: unique(appPorts).sort((a, b) => a - b),
    fastPathPorts: unique(fastPathPorts).sort((a, b) => a - b),
    inboundPort,
  };
}

function list(metadata: Readonly<Record<string, unknown>>, field: string): string[] {
  const raw = metadata[field];
  // An empty string arrives as a Struct value without a kind, decoded as null.
  if (raw === undefined || raw === null || raw === "") return [];
  if (typeof raw !== "string" && typeof raw !== "number")
    throw new RegistrationError(field, "must be a comma-separated string");
  const items = String(raw)
    .split(",")
    .map((s) => s.trim());
  if (items.some((s) => s === "")) throw new RegistrationError(field, "has an empty entry");
  if (items.length > MAX_ENTRIES) throw new RegistrationError(field, `more than ${MAX_ENTRIES} entries`);
  return items;
}

function port(text: string, field: string): number {
  const n = Number(text);
  if (!/^\d{1,5}$/.test(text) || !Number.isInteger(n) || n < 1 || n > 65535)
    throw new RegistrationError(field, `"${text}" is not a port`);
  return n;
}

function unique<T>(items: readonly T[]): T[] {
  return [...new Set(items)];
}
