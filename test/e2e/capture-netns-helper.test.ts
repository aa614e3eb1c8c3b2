import { execFileSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { afterAll, describe, expect, it } from "vitest";
import { NetnsLab, runOk, sweepStaleNamespaces, uniqueName, waitFor } from "../support/netns.ts";

describe("netns test helper", () => {
  let lab: NetnsLab | undefined;
  afterAll(async () => {
    await lab?.destroy();
  });

  it("builds a LAN whose hosts reach each other over IPv4 and IPv6", async () => {
    lab = await NetnsLab.create(["a", "b"], { subnet: 7 });
    const a = lab.host("a");
    const b = lab.host("b");
    expect(a.ipv4).toBe("198.18.7.1");
    expect(b.ipv6).toBe("2001:2:0:7::2");
    for (const address of [b.ipv4, b.ipv6]) {
      const server = b.ns.spawn(["nc", "-l", "-N", address, "7000"]);
      server.stdin?.end("hello from b\n");
      await waitFor("listener", async () =>
        (await b.ns.execOk(["ss", "-Htln", "sport = :7000"])).includes("7000"),
      );
      expect(await a.ns.execOk(["nc", "-N", "-w2", address, "7000"])).toBe("hello from b\n");
    }
    expect(await a.ns.execOk(["id", "-u"], { as: { uid: 4242, gid: 4242 } })).toBe("4242\n");
  });

  it("removes every namespace it made on destroy", async () => {
    const names = [lab!.hub.name, lab!.host("a").ns.name, lab!.host("b").ns.name];
    await lab!.destroy();
    lab = undefined;
    const listed = await runOk(["ip", "netns", "list"]);
    for (const name of names) expect(listed).not.toContain(name);
  });

  it("sweeps namespaces left by a dead process, and only those", async () => {
    const stale = uniqueName("stale");
    execFileSync("ip", ["netns", "add", stale]);
    // A pid that cannot belong to a live process: above the kernel's pid_max ceiling.
    writeFileSync(`/run/sigil-test-netns/${stale}`, "4194305");
    const foreign = uniqueName("foreign");
    execFileSync("ip", ["netns", "add", foreign]);
    try {
      const removed = await sweepStaleNamespaces();
      expect(removed).toContain(stale);
      const listed = await runOk(["ip", "netns", "list"]);
      expect(listed).not.toContain(stale);
      expect(listed).toContain(foreign);
    } finally {
      execFileSync("ip", ["netns", "del", foreign]);
    }
  });
});
