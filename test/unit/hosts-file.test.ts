import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { EgressNameResolver } from "../../sidecar/egress/dns.ts";
import { parseHosts } from "../../sidecar/egress/hosts-file.ts";

describe("host table parsing", () => {
  it("reads addresses with their names and aliases, case and trailing dot folded", () => {
    const table = parseHosts(
      [
        "127.0.0.1\tlocalhost",
        "198.18.5.1 Db.Internal. db  # primary",
        "198.18.5.2 db.internal",
        "2001:db8::7 v6.internal",
        "fe80::1%eth0 link.internal",
      ].join("\n"),
    );
    expect(table.get("db.internal")).toEqual(["198.18.5.1", "198.18.5.2"]);
    expect(table.get("db")).toEqual(["198.18.5.1"]);
    expect(table.get("v6.internal")).toEqual(["2001:db8::7"]);
    expect(table.get("link.internal")).toEqual(["fe80::1"]);
    expect(table.get("localhost")).toEqual(["127.0.0.1"]);
  });

  it("skips comments, blank lines and lines that do not start with an IP address", () => {
    const table = parseHosts("# 198.18.5.9 commented.internal\n\n   \nnot-an-ip bad.internal\n198.18.5.3\n");
    expect([...table.keys()]).toEqual([]);
  });
});

describe("host table answers in the egress name check", () => {
  it("binds a name given a scoped IPv6 address to the address without its zone, and never rejects", async () => {
    const dir = await mkdtemp(join(tmpdir(), "sigil-hosts-"));
    try {
      const path = join(dir, "hosts");
      await writeFile(path, "fe80::1%eth0 link.internal\n");
      const resolver = new EgressNameResolver({ hostsFile: path });
      await expect(resolver.prepare(["link.internal"], "fe80::1")).resolves.toBeUndefined();
      expect(resolver.check("link.internal", "fe80::1")).toEqual({ kind: "bound" });
      expect(resolver.check("link.internal", "fe80::2").kind).toBe("mismatch");
      // A destination given with a zone (an explicit target's address) is compared without it.
      await expect(resolver.prepare(["link.internal"], "fe80::1%eth1")).resolves.toBeUndefined();
      expect(resolver.check("link.internal", "fe80::1%eth1")).toEqual({ kind: "bound" });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
