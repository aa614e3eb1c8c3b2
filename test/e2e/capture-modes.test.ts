/**
 * TPROXY capture (mangle rules plus policy routing) and the fast path's NFQUEUE hooks against the real
 * kernel, in namespaces this suite makes, with both iptables back ends.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { installCapture, readTables, uninstallCapture } from "../../sidecar/capture/apply.ts";
import type { ExternalRules } from "../../sidecar/capture/external-rules.ts";
import { parseCaptureConfig, type CaptureConfig } from "../../sidecar/capture/config.ts";
import { normalizeSave } from "../../sidecar/capture/transaction.ts";
import { NetnsLab, type LabHost } from "../support/netns.ts";
import { startTagServer, startTransparentServer, tcpRequest, type TagServer } from "./capture-fixtures.ts";

const APP = { uid: 2000, gid: 2000 };

/** Everything capture may change in a namespace: both families' tables, policy rules and table 133. */
async function kernelState(host: LabHost, backend: "nft" | "legacy"): Promise<string> {
  const target = { backend, netns: host.ns.name };
  const parts = [normalizeSave(await readTables(target, 4)), normalizeSave(await readTables(target, 6))];
  for (const family of ["-4", "-6"]) {
    parts.push(await host.ns.execOk(["ip", family, "rule", "show"]));
    // Routes only: the kernel keeps an emptied routing table, which lists the same as a missing one.
    parts.push((await host.ns.exec(["ip", family, "route", "show", "table", "133"])).stdout);
  }
  return parts.join("\n----\n");
}

describe.each([
  { backend: "nft" as const, subnet: 43 },
  { backend: "legacy" as const, subnet: 44 },
])("TPROXY capture with the $backend back end", ({ backend, subnet }) => {
  let lab: NetnsLab;
  let app: LabHost;
  let peer: LabHost;
  let config: CaptureConfig;
  let appServer: TagServer;
  let pristine: string;

  beforeAll(async () => {
    lab = await NetnsLab.create(["app", "peer"], { subnet });
    app = lab.host("app");
    peer = lab.host("peer");
    config = parseCaptureConfig(
      { mode: "tproxy", proxyUid: 1337, excludeInboundPorts: [7022], outbound: false, backend },
      "test",
    );
    // A host that has used iptables before: its mangle table exists and holds someone's rule.
    for (const tool of ["iptables", "ip6tables"]) {
      await app.ns.execOk([`${tool}-${backend}-restore`, "--noflush"], {
        input: "*mangle\n-A PREROUTING -p udp -j RETURN\nCOMMIT\n",
      });
    }
    appServer = await startTagServer(app.ns, "::", 8080, "app-8080", APP);
    await startTagServer(app.ns, "::", 7022, "app-7022", APP);
    pristine = await kernelState(app, backend);
  });

  afterAll(async () => {
    await lab?.destroy();
  });

  it("installs mangle rules and policy routing; twice equals once", async () => {
    await installCapture(config, { backend, netns: app.ns.name });
    const once = await kernelState(app, backend);
    expect(once).toContain("-j TPROXY --on-port 15006");
    expect(once).toMatch(/from all fwmark 0x100\/0x100 lookup 133/);
    expect(once).toMatch(/local default dev lo/);
    await installCapture(config, { backend, netns: app.ns.name });
    expect(await kernelState(app, backend)).toBe(once);
  });

  it("delivers inbound connections to the transparent listener with the original destination intact", async () => {
    const sidecar = await startTransparentServer(app.ns, config.inboundPort);
    try {
      expect(await tcpRequest(peer.ns, app.ipv4, 8080)).toBe(`tproxy ${app.ipv4} 8080`);
      expect(await tcpRequest(peer.ns, app.ipv6, 8080)).toBe(`tproxy ${app.ipv6} 8080`);
      expect(await tcpRequest(peer.ns, app.ipv4, 7022)).toBe("app-7022");
      expect(sidecar.accepted()).toBe(2);
    } finally {
      await sidecar.stop();
    }
  });

  it("fails closed with no listener: the connection never reaches the app", async () => {
    const before = appServer.accepted();
    expect(await tcpRequest(peer.ns, app.ipv4, 8080)).toMatch(/^ERR:/);
    expect(await tcpRequest(peer.ns, app.ipv6, 8080)).toMatch(/^ERR:/);
    expect(appServer.accepted()).toBe(before);
  });

  it("uninstall restores tables, policy rules and the route table exactly", async () => {
    await uninstallCapture(config, { backend, netns: app.ns.name });
    expect(await kernelState(app, backend)).toBe(pristine);
    expect(await tcpRequest(peer.ns, app.ipv4, 8080)).toBe("app-8080");
  });
});

describe.each(["nft" as const, "legacy" as const])("a namespace that never used iptables (%s)", (backend) => {
  it("is left with at most empty tables with ACCEPT policies after install and uninstall", async () => {
    const lab = await NetnsLab.create(["x"], { subnet: backend === "nft" ? 47 : 48 });
    try {
      const target = { backend, netns: lab.host("x").ns.name };
      const config = parseCaptureConfig({ mode: "tproxy", proxyUid: 1337, backend }, "test");
      expect(normalizeSave(await readTables(target, 4))).toBe("");
      await installCapture(config, target);
      await uninstallCapture(config, target);
      for (const family of [4, 6] as const) {
        const left = normalizeSave(await readTables(target, family)).split("\n");
        // The kernel keeps a table once it exists (legacy cannot drop it at all); it must hold nothing.
        expect(left.filter((l) => !/^(\*\w+|:[A-Z]+ ACCEPT|COMMIT)$/.test(l))).toEqual([]);
      }
    } finally {
      await lab.destroy();
    }
  });
});

/** NFQUEUE hooks shaped like the fast path's, with no datapath bound to the queues. */
const FAST_PATH: ExternalRules = {
  owner: "fast path",
  restoreText: `*mangle
:SIGIL-FP-PRE - [0:0]
-A SIGIL-FP-PRE -p tcp --tcp-flags SYN,ACK,RST,FIN SYN -m multiport --dports 7443 -j NFQUEUE --queue-balance 4200:4201
COMMIT
*filter
:SIGIL-FP-IN - [0:0]
-A SIGIL-FP-IN -p tcp -m multiport --dports 7443 -m connmark --mark 0x0/0xf00000 -j DROP
COMMIT
`,
  hooks: [
    { table: "mangle", builtin: "PREROUTING", chain: "SIGIL-FP-PRE" },
    { table: "filter", builtin: "INPUT", chain: "SIGIL-FP-IN" },
  ],
};

describe.each([
  { backend: "nft" as const, subnet: 45 },
  { backend: "legacy" as const, subnet: 46 },
])("fast-path rules applied by the capture wrapper with the $backend back end", ({ backend, subnet }) => {
  let lab: NetnsLab;

  afterAll(async () => {
    await lab?.destroy();
  });

  it("installs them with capture, fails closed while no datapath reads the queue, and removes them exactly", async () => {
    lab = await NetnsLab.create(["app", "peer"], { subnet });
    const app = lab.host("app");
    const peer = lab.host("peer");
    const server = await startTagServer(app.ns, "::", 7443, "app-7443", APP);
    const config = parseCaptureConfig(
      { proxyUid: 1337, excludeInboundPorts: [22], backend, fastPathMarkMask: 0xf00000 },
      "test",
    );
    const target = { backend, netns: app.ns.name };
    await installCapture(config, target, [FAST_PATH]);
    const once = await kernelState(app, backend);
    expect(once).toContain("-A PREROUTING -j SIGIL-FP-PRE");
    expect(once).toContain("-A INPUT -j SIGIL-FP-IN");
    expect(once).toContain("-A SIGIL_INBOUND -m mark ! --mark 0x0/0xf00000 -j RETURN");
    await installCapture(config, target, [FAST_PATH]);
    expect(await kernelState(app, backend)).toBe(once);

    expect(await tcpRequest(peer.ns, app.ipv4, 7443)).toBe("ERR:TIMEOUT");
    expect(await tcpRequest(peer.ns, app.ipv6, 7443)).toBe("ERR:TIMEOUT");
    expect(server.accepted()).toBe(0);

    // Without the fast path's rules in hand, uninstall leaves its chains alone (their owner manages them).
    await uninstallCapture(config, target);
    const left = await kernelState(app, backend);
    expect(left).toContain("SIGIL-FP-PRE");
    expect(left).not.toContain("SIGIL_");
    await uninstallCapture(config, target, [FAST_PATH]);
    expect(await kernelState(app, backend)).not.toContain("SIGIL");
    expect(await tcpRequest(peer.ns, app.ipv4, 7443)).toBe("app-7443");
  });
});

describe("a family left out of capture", () => {
  it("is refused while the host has addresses in it, since its traffic would bypass the sidecar", async () => {
    const lab = await NetnsLab.create(["x"], { subnet: 49 });
    try {
      const host = lab.host("x");
      const target = { backend: "nft" as const, netns: host.ns.name };
      const config = parseCaptureConfig({ proxyUid: 1337, families: [4], backend: "nft" }, "test");
      await expect(installCapture(config, target)).rejects.toThrow(
        `IPv6 is not captured but this host has IPv6 addresses (${host.ipv6}/64)`,
      );
      expect(normalizeSave(await readTables(target, 4))).not.toContain("SIGIL_");
      await host.ns.execOk(["ip", "-6", "addr", "flush", "dev", "eth0", "scope", "global"]);
      await installCapture(config, target);
      expect(normalizeSave(await readTables(target, 4))).toContain("SIGIL_OUTBOUND");
    } finally {
      await lab.destroy();
    }
  });
});
