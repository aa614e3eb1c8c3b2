import { describe, expect, it } from "vitest";
import { parseHosts } from "../../sidecar/hosts-file.ts";

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
    expect(table.get("link.internal")).toEqual(["fe80::1%eth0"]);
    expect(table.get("localhost")).toEqual(["127.0.0.1"]);
  });

  it("skips comments, blank lines and lines that do not start with an IP address", () => {
    const table = parseHosts("# 198.18.5.9 commented.internal\n\n   \nnot-an-ip bad.internal\n198.18.5.3\n");
    expect([...table.keys()]).toEqual([]);
  });
});
