/**
 * Capture against the real kernel, with both iptables back ends, in namespaces this suite makes:
 * install is idempotent, uninstall restores the tables exactly, exclusions bypass the redirect, the
 * sidecar's uid is not captured (and sharing only its group does not escape), and with the sidecar
 * dead captured connections are refused instead of reaching anyone in clear.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  installCapture,
  readTables,
  uninstallCapture,
  CaptureApplyError,
} from "../../sidecar/capture/apply.ts";
import { parseCaptureConfig, type CaptureConfig, type IpFamily } from "../../sidecar/capture/config.ts";
import { normalizeSave } from "../../sidecar/capture/transaction.ts";
import { NetnsLab, type LabHost } from "../support/netns.ts";
import { startTagServer, tcpRequest, type TagServer } from "./capture-fixtures.ts";

const PROXY = { uid: 1337, gid: 1337 };
const APP = { uid: 2000, gid: 2000 };
/** A process that shares the sidecar's group but not its uid: it must still be captured. */
const GROUP_SHARER = { uid: 2001, gid: 1337 };

/** Unrelated rules a host already has; capture must leave every one of them as it was. */
const PRE_EXISTING = `*filter
:INPUT ACCEPT [0:0]
-A INPUT -p tcp --dport 9 -j DROP
COMMIT
*nat
:KEEP_ME - [0:0]
-A KEEP_ME -p udp -j RETURN
-A PREROUTING -p udp -j KEEP_ME
-A OUTPUT -p udp --dport 53 -j RETURN
-A POSTROUTING -o eth0 -p udp -j RETURN
COMMIT
*mangle
-A PREROUTING -p udp -j RETURN
COMMIT
`;

describe.each([
  { backend: "nft" as const, subnet: 41 },
  { backend: "legacy" as const, subnet: 42 },
])("capture with the $backend back end", ({ backend, subnet }) => {
  let lab: NetnsLab;
  let app: LabHost;
  let peer: LabHost;
  let config: CaptureConfig;
  const servers: TagServer[] = [];
  const excludedV4 = `198.18.${subnet}.200`;
  const excludedV6 = `2001:2:0:${subnet.toString(16)}::c8`;
  const target = () => ({ backend, netns: app.ns.name });
  const save = async (family: IpFamily) => normalizeSave(await readTables(target(), family));
  const saveBoth = async () => `${await save(4)}\n----\n${await save(6)}`;

  beforeAll(async () => {
    lab = await NetnsLab.create(["app", "peer"], { subnet });
    app = lab.host("app");
    peer = lab.host("peer");
    await peer.ns.execOk(["ip", "addr", "add", `${excludedV4}/24`, "dev", "eth0"]);
    await peer.ns.execOk(["ip", "-6", "addr", "add", `${excludedV6}/64`, "dev", "eth0", "nodad"]);
    for (const tool of ["iptables", "ip6tables"]) {
      await app.ns.execOk([`${tool}-${backend}-restore`, "--noflush"], { input: PRE_EXISTING });
    }
    config = parseCaptureConfig(
      {
        proxyUid: PROXY.uid,
        proxyGid: PROXY.gid,
        excludeInboundPorts: [7022],
        excludeOutboundPorts: [7001],
        excludeOutboundCidrs: [`${excludedV4}/32`, `${excludedV6}/128`],
        backend,
      },
      "test",
    );
    for (const port of [7000, 7001]) servers.push(await startTagServer(peer.ns, "::", port, `peer-${port}`));
  });

  afterAll(async () => {
    await lab?.destroy();
  });

  it("install twice leaves the same tables as install once, with Sigil's hooks first", async () => {
    const before = await saveBoth();
    await installCapture(config, target());
    const once = await saveBoth();
    expect(once).not.toBe(before);
    expect(once).toContain("-A PREROUTING -p tcp -j SIGIL_INBOUND\n-A PREROUTING -p udp -j KEEP_ME");
    expect(once).toContain(
      "-A OUTPUT -p tcp -j SIGIL_OUTBOUND\n-A OUTPUT -p udp -m udp --dport 53 -j RETURN",
    );
    await installCapture(config, target());
    expect(await saveBoth()).toBe(once);
  });

  it("uninstall restores iptables-save output exactly, and a second uninstall changes nothing", async () => {
    const fresh = await NetnsLab.create(["x"], { subnet: subnet + 100 });
    try {
      const ns = fresh.host("x").ns;
      for (const tool of ["iptables", "ip6tables"]) {
        await ns.execOk([`${tool}-${backend}-restore`, "--noflush"], { input: PRE_EXISTING });
      }
      const t = { backend, netns: ns.name };
      const read = async () =>
        `${normalizeSave(await readTables(t, 4))}\n${normalizeSave(await readTables(t, 6))}`;
      const before = await read();
      await installCapture(config, t);
      await installCapture(config, t);
      expect(await read()).toContain("SIGIL_OUTBOUND");
      await uninstallCapture(config, t);
      expect(await read()).toBe(before);
      const again = await uninstallCapture(config, t);
      expect(again.map((a) => a.transaction)).toEqual(["", ""]);
      expect(await read()).toBe(before);
    } finally {
      await fresh.destroy();
    }
  });

  describe("with the sidecar listening", () => {
    let outbound: TagServer;
    let inbound: TagServer;
    beforeAll(async () => {
      outbound = await startTagServer(app.ns, "::", config.outboundPort, "sidecar-outbound", PROXY);
      inbound = await startTagServer(app.ns, "::", config.inboundPort, "sidecar-inbound", PROXY);
      servers.push(await startTagServer(app.ns, "::", 7022, "app-7022", APP));
      servers.push(await startTagServer(app.ns, "::", 8080, "app-8080", APP));
    });
    afterAll(async () => {
      await outbound.stop();
      await inbound.stop();
    });

    it("redirects the app's outbound TCP to the sidecar, over IPv4 and IPv6", async () => {
      expect(await tcpRequest(app.ns, peer.ipv4, 7000, APP)).toBe("sidecar-outbound");
      expect(await tcpRequest(app.ns, peer.ipv6, 7000, APP)).toBe("sidecar-outbound");
    });

    it("lets excluded outbound ports and CIDRs bypass the sidecar", async () => {
      expect(await tcpRequest(app.ns, peer.ipv4, 7001, APP)).toBe("peer-7001");
      expect(await tcpRequest(app.ns, peer.ipv6, 7001, APP)).toBe("peer-7001");
      expect(await tcpRequest(app.ns, excludedV4, 7000, APP)).toBe("peer-7000");
      expect(await tcpRequest(app.ns, excludedV6, 7000, APP)).toBe("peer-7000");
    });

    it("does not capture the sidecar's own connections, but captures a process sharing only its group", async () => {
      expect(await tcpRequest(app.ns, peer.ipv4, 7000, PROXY)).toBe("peer-7000");
      expect(await tcpRequest(app.ns, peer.ipv6, 7000, PROXY)).toBe("peer-7000");
      expect(await tcpRequest(app.ns, peer.ipv4, 7000, GROUP_SHARER)).toBe("sidecar-outbound");
      expect(await tcpRequest(app.ns, peer.ipv6, 7000, GROUP_SHARER)).toBe("sidecar-outbound");
    });

    it("redirects inbound connections to the sidecar, except excluded ports", async () => {
      expect(await tcpRequest(peer.ns, app.ipv4, 8080)).toBe("sidecar-inbound");
      expect(await tcpRequest(peer.ns, app.ipv6, 8080)).toBe("sidecar-inbound");
      expect(await tcpRequest(peer.ns, app.ipv4, 7022)).toBe("app-7022");
      expect(await tcpRequest(peer.ns, app.ipv6, 7022)).toBe("app-7022");
    });

    it("keeps loopback traffic local", async () => {
      expect(await tcpRequest(app.ns, "127.0.0.1", 8080, APP)).toBe("app-8080");
      expect(await tcpRequest(app.ns, "::1", 8080, APP)).toBe("app-8080");
    });
  });

  it("fails closed with the sidecar dead: captured connections are refused and reach no one", async () => {
    const peerAccepted = servers.map((s) => s.accepted());
    for (const address of [peer.ipv4, peer.ipv6]) {
      expect(await tcpRequest(app.ns, address, 7000, APP)).toBe("ERR:ECONNREFUSED");
      expect(await tcpRequest(app.ns, address, 7000, GROUP_SHARER)).toBe("ERR:ECONNREFUSED");
    }
    for (const address of [app.ipv4, app.ipv6]) {
      expect(await tcpRequest(peer.ns, address, 8080)).toBe("ERR:ECONNREFUSED");
    }
    // Neither the remote servers nor the app's own server on 8080 saw any of those connections.
    expect(servers.map((s) => s.accepted())).toEqual(peerAccepted);
  });

  it("names the rule and the reason when the kernel refuses a transaction", async () => {
    // Someone else's chain jumps into Sigil's: Sigil must not silently rip it out.
    await installCapture(config, target());
    await app.ns.execOk([`iptables-${backend}`, "-t", "nat", "-A", "KEEP_ME", "-j", "SIGIL_OUT_REDIRECT"]);
    try {
      const error = await installCapture(config, target()).then(
        () => null,
        (e: unknown) => e,
      );
      expect(error).toBeInstanceOf(CaptureApplyError);
      const message = (error as CaptureApplyError).message;
      expect(message).toMatch(
        /IPv4 capture rules rejected by iptables-\w+-restore at line \d+ \(table nat\)/,
      );
      expect(message).toContain("SIGIL_OUT_REDIRECT");
    } finally {
      await app.ns.execOk([`iptables-${backend}`, "-t", "nat", "-D", "KEEP_ME", "-j", "SIGIL_OUT_REDIRECT"]);
    }
  });
});
