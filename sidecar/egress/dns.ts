import type { RecordWithTtl } from "node:dns";
import { promises as dns } from "node:dns";
import net from "node:net";
import { canonicalName } from "../../core/policy/dns.ts";
import { HostsFile } from "./hosts-file.ts";

/**
 * Egress DNS-name binding. A `dnsNames` egress rule is matched against a name the application
 * claims (explicit target, Host header, :authority, TLS SNI), while the connection goes to an
 * address the application chose. A name may therefore only allow a connection whose destination
 * address is one the name resolves to, as this resolver sees it.
 *
 * Names in the static host table (`hostsFile`, /etc/hosts by default) are answered from it before
 * DNS is asked, as the application's own resolver does (`hosts-file.ts`); its answers are cached for
 * `HOSTS_TTL_S`, so an edit of the file applies within that.
 *
 * Answers are cached per name with their TTLs: every address keeps its own expiry, so an address a
 * name pointed to within its TTL stays bound even when a later answer (round-robin) omits it.
 * Failures are cached for `failureTtlMs`. Lookups are bounded in time and in number in flight, and
 * the cache in entries (least recently used evicted). `check` is synchronous (decisions are taken
 * synchronously); `prepare` fills the cache before a connection is decided.
 */

export interface EgressDnsOptions {
  /** DNS servers (`ip` or `ip:port`, `[ipv6]:port`); empty = the system's resolv.conf servers. */
  readonly servers: readonly string[];
  /** Upper bound of one name's lookup (A and AAAA together). */
  readonly timeoutMs: number;
  /** Names kept in the cache. */
  readonly maxEntries: number;
  /** Lookups in flight at once; beyond that a name fails without a query. */
  readonly maxInFlight: number;
  /** How long a failed lookup is remembered. */
  readonly failureTtlMs: number;
  /** Floor for record TTLs, so a TTL-0 answer still serves the decision it was fetched for. */
  readonly minTtlMs: number;
  /** Ceiling for record TTLs. */
  readonly maxTtlMs: number;
  /** Static host table consulted before DNS; "" for none. */
  readonly hostsFile: string;
}

export const DEFAULT_EGRESS_DNS: EgressDnsOptions = {
  servers: [],
  timeoutMs: 2_000,
  maxEntries: 4_096,
  maxInFlight: 256,
  failureTtlMs: 5_000,
  minTtlMs: 1_000,
  maxTtlMs: 3_600_000,
  hostsFile: "/etc/hosts",
};

/** How long an answer from the host table is used before the table is consulted again. */
const HOSTS_TTL_S = 5;

/** The part of node's promise Resolver this module uses (tests pass a real Resolver aimed at their server). */
export interface RecordResolver {
  resolve4(name: string, options: { ttl: true }): Promise<RecordWithTtl[]>;
  resolve6(name: string, options: { ttl: true }): Promise<RecordWithTtl[]>;
}

/** Whether `name` may stand for `address`, as far as the cache knows right now. */
export type NameBinding =
  | { readonly kind: "bound" }
  | { readonly kind: "mismatch"; readonly addresses: readonly string[] }
  | { readonly kind: "failed"; readonly error: string }
  | { readonly kind: "unresolved" };

interface Entry {
  /** Address → expiry (ms since epoch). */
  readonly addresses: Map<string, number>;
  /** Until when the last answer (or failure) is current. */
  freshUntil: number;
  error: string | null;
}

/**
 * Canonical text of an IP address: IPv4-mapped IPv6 as IPv4, IPv6 compressed and lower case and
 * without a zone (fe80::1%eth0: the URL parser that compresses it refuses zones, and no answer
 * carries one).
 */
export function canonicalAddress(address: string): string {
  const bare = address.startsWith("[") && address.endsWith("]") ? address.slice(1, -1) : address;
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(bare);
  if (mapped) return mapped[1] as string;
  if (net.isIPv6(bare)) return new URL(`http://[${bare.replace(/%.*/, "")}]/`).hostname.slice(1, -1);
  return bare;
}

function isLocalhostName(name: string): boolean {
  return name === "localhost" || name.endsWith(".localhost");
}

function isLoopback(address: string): boolean {
  return address === "::1" || (net.isIPv4(address) && address.startsWith("127."));
}

/** The denial reason for a name that does not stand for the destination address. */
export function bindingProblem(name: string, address: string, binding: NameBinding): string | null {
  switch (binding.kind) {
    case "bound":
      return null;
    case "mismatch":
      return `dns-binding: ${name} does not resolve to ${address} (resolves to ${binding.addresses.join(", ") || "no address"})`;
    case "failed":
      return `dns-binding: ${name} could not be resolved to check ${address}: ${binding.error}`;
    case "unresolved":
      return `dns-binding: ${name} was not resolved in time to check ${address}`;
  }
}

function errorText(err: unknown): string {
  const e = err as { code?: string; message?: string };
  return e.code ?? e.message ?? String(err);
}

export class EgressNameResolver {
  private readonly options: EgressDnsOptions;
  private readonly resolver: RecordResolver;
  private readonly cache = new Map<string, Entry>();
  private readonly inFlight = new Map<string, Promise<void>>();
  private readonly hosts: HostsFile | null;

  constructor(
    options: Partial<EgressDnsOptions> = {},
    resolver?: RecordResolver,
    private readonly now: () => number = Date.now,
  ) {
    this.options = { ...DEFAULT_EGRESS_DNS, ...options };
    this.hosts = this.options.hostsFile === "" ? null : new HostsFile(this.options.hostsFile);
    if (resolver) {
      this.resolver = resolver;
    } else {
      const r = new dns.Resolver({ timeout: this.options.timeoutMs, tries: 1 });
      if (this.options.servers.length > 0) r.setServers([...this.options.servers]);
      this.resolver = r;
    }
  }

  get size(): number {
    return this.cache.size;
  }

  /** What the cache says about `name` → `address` now; never queries. */
  check(name: string, address: string): NameBinding {
    const canonical = canonicalName(name);
    // RFC 6761: localhost names are loopback and are never sent to a DNS server.
    if (isLocalhostName(canonical))
      return isLoopback(canonicalAddress(address))
        ? { kind: "bound" }
        : { kind: "mismatch", addresses: ["127.0.0.1", "::1"] };
    const entry = this.cache.get(canonical);
    if (entry === undefined) return { kind: "unresolved" };
    const now = this.now();
    const expiry = entry.addresses.get(canonicalAddress(address));
    if (expiry !== undefined && expiry > now) return { kind: "bound" };
    if (entry.freshUntil <= now) return { kind: "unresolved" };
    if (entry.error !== null) return { kind: "failed", error: entry.error };
    const current = [...entry.addresses].filter(([, until]) => until > now).map(([a]) => a);
    return { kind: "mismatch", addresses: current };
  }

  /**
   * Makes sure every name has a current answer for `address` (looking up those that need it, in
   * parallel, each bounded by `timeoutMs`). Never rejects: failures are cached as failures.
   */
  async prepare(names: Iterable<string>, address: string): Promise<void> {
    const waits: Promise<void>[] = [];
    for (const raw of names) {
      const name = canonicalName(raw);
      if (name === "" || net.isIP(name) !== 0) continue;
      if (this.check(name, address).kind === "unresolved") waits.push(this.lookup(name));
    }
    if (waits.length > 0) await Promise.all(waits);
  }

  private lookup(name: string): Promise<void> {
    const pending = this.inFlight.get(name);
    if (pending) return pending;
    if (this.inFlight.size >= this.options.maxInFlight) {
      this.store(name, [], `too many lookups in flight (${this.options.maxInFlight})`);
      return Promise.resolve();
    }
    const run = this.query(name).finally(() => this.inFlight.delete(name));
    this.inFlight.set(name, run);
    return run;
  }

  private async query(name: string): Promise<void> {
    const fromFile = (await this.hosts?.addresses(name)) ?? [];
    if (fromFile.length > 0) {
      this.store(
        name,
        fromFile.map((address) => ({ address, ttl: HOSTS_TTL_S })),
        null,
      );
      return;
    }
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<"timeout">((resolve) => {
      timer = setTimeout(() => resolve("timeout"), this.options.timeoutMs);
    });
    const answers = Promise.allSettled([
      this.resolver.resolve4(name, { ttl: true }),
      this.resolver.resolve6(name, { ttl: true }),
    ]);
    const outcome = await Promise.race([answers, timeout]);
    clearTimeout(timer);
    if (outcome === "timeout") {
      this.store(name, [], `lookup timed out after ${this.options.timeoutMs} ms`);
      return;
    }
    const records: RecordWithTtl[] = [];
    const errors: string[] = [];
    for (const o of outcome) {
      if (o.status === "fulfilled") records.push(...o.value);
      else errors.push(errorText(o.reason));
    }
    // NODATA for one family is normal (an IPv4-only name); only no address at all is a failure.
    if (records.length === 0) this.store(name, [], [...new Set(errors)].join(", ") || "no address");
    else this.store(name, records, null);
  }

  private store(name: string, records: readonly RecordWithTtl[], error: string | null): void {
    const now = this.now();
    const { minTtlMs, maxTtlMs, failureTtlMs, maxEntries } = this.options;
    const entry = this.cache.get(name) ?? { addresses: new Map<string, number>(), freshUntil: 0, error };
    for (const [address, until] of entry.addresses) if (until <= now) entry.addresses.delete(address);
    let freshUntil = error === null ? Infinity : now + failureTtlMs;
    for (const r of records) {
      const until = now + Math.min(maxTtlMs, Math.max(minTtlMs, r.ttl * 1000));
      const address = canonicalAddress(r.address);
      entry.addresses.set(address, Math.max(until, entry.addresses.get(address) ?? 0));
      freshUntil = Math.min(freshUntil, until);
    }
    entry.freshUntil = freshUntil;
    entry.error = error;
    // Re-insert so Map order is least recently refreshed first, then evict beyond the bound.
    this.cache.delete(name);
    this.cache.set(name, entry);
    while (this.cache.size > maxEntries) {
      const oldest = this.cache.keys().next().value as string;
      this.cache.delete(oldest);
    }
  }
}
