import { readFile, stat } from "node:fs/promises";
import net from "node:net";
import { canonicalName } from "../../core/policy/dns.ts";

/**
 * The static host table (`/etc/hosts`). An application's own resolver (getaddrinfo, "files" before
 * "dns") answers the names in it without asking DNS, so the egress name check must read it too, or a
 * name the application reached through it could never be bound to its address. Read again whenever
 * the file's modification time or size changes; a file larger than `MAX_BYTES` or unreadable counts
 * as naming nothing.
 */

const MAX_BYTES = 1 << 20;

/** Name (canonical) → addresses, in the order the file gives them, from hosts(5) text. */
export function parseHosts(text: string): Map<string, string[]> {
  const table = new Map<string, string[]>();
  for (const raw of text.split("\n")) {
    const [field, ...names] = raw.replace(/#.*/, "").trim().split(/\s+/);
    // A scoped IPv6 address (fe80::1%eth0) is kept without its zone: the destination address a
    // connection is checked against never carries one.
    if (field === undefined || net.isIP(field) === 0) continue;
    const address = net.isIPv6(field) ? field.replace(/%.*/, "") : field;
    for (const name of names) {
      const canonical = canonicalName(name);
      if (canonical === "") continue;
      const addresses = table.get(canonical) ?? [];
      if (!addresses.includes(address)) addresses.push(address);
      table.set(canonical, addresses);
    }
  }
  return table;
}

export class HostsFile {
  private table = new Map<string, string[]>();
  private readAs: { mtimeMs: number; size: number } | null = null;

  constructor(readonly path: string) {}

  /** Addresses the file gives `name` (canonical); empty when it does not name it. */
  async addresses(name: string): Promise<readonly string[]> {
    await this.refresh();
    return this.table.get(name) ?? [];
  }

  private async refresh(): Promise<void> {
    try {
      const s = await stat(this.path);
      if (this.readAs?.mtimeMs === s.mtimeMs && this.readAs.size === s.size) return;
      this.table = s.size > MAX_BYTES ? new Map() : parseHosts(await readFile(this.path, "utf8"));
      this.readAs = { mtimeMs: s.mtimeMs, size: s.size };
    } catch {
      this.table = new Map();
      this.readAs = null;
    }
  }
}
