/**
 * The L4 fast path end to end, in namespaces on one LAN (198.18.0.0/24, 2001:2::/64): a client
 * workload (app=web) and a server workload (app=db), each with the real enforcer process, and a
 * third host used as a peer without an enforcer or with a disallowed identity. Unmodified curl, nc
 * and iperf3 as clients.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { NetnsLab, waitFor } from "../support/netns.ts";
import type { LabHost } from "../support/netns.ts";
import { EnforcerProcess } from "./fastpath-support/enforcer-process.ts";
import { OutputLines, REPO_ROOT, jsonLine } from "./fastpath-support/process-output.ts";
import { TestPki } from "./fastpath-support/pki.ts";
import { startAppServers, startEnforcerPair, webToDbPolicy } from "./fastpath-support/lab.ts";

const HTTP = 8080;
const ECHO = 7000;
const IPERF = 5201;
const PORTS = [HTTP, ECHO, IPERF];
/** A port with HTTP rules: policy sends it through the L7 proxy, never the fast path. */
const API = 8443;

/** The textual form inet_ntop (and so the enforcer) uses for an IPv6 address. */
function canonical(ipv6: string): string {
  return new URL(`http://[${ipv6}]/`).hostname.slice(1, -1);
}

const POLICY = (plainPeer: string): string =>
  webToDbPolicy(PORTS, [
    `{ action: allow, from: [ { cidrs: [ "${plainPeer}/32" ] } ], ports: [ ${ECHO} ] }`,
    `{ action: allow, from: [ { matchLabels: { app: web } } ], ports: [ ${API} ], http: { methods: [ GET ] } }`,
  ]);

describe.sequential("fast path: identity in the handshake, then out of the data path", () => {
  let lab: NetnsLab;
  let pki: TestPki;
  let client: LabHost;
  let server: LabHost;
  let other: LabHost;
  let clientEnforcer: EnforcerProcess;
  let serverEnforcer: EnforcerProcess;
  let apps: OutputLines;
  let policyFile: string;

  beforeAll(async () => {
    lab = await NetnsLab.create(["client", "server", "other"]);
    client = lab.host("client");
    server = lab.host("server");
    other = lab.host("other");
    pki = await TestPki.create();
    policyFile = await pki.file("policy.yaml", POLICY(other.ipv4));
    apps = await startAppServers(server, HTTP, ECHO);
    ({ server: serverEnforcer, client: clientEnforcer } = await startEnforcerPair(pki, server, client, {
      policyFile,
      ports: PORTS,
      serverPorts: [...PORTS, API],
    }));
  }, 60_000);

  afterAll(async () => {
    await lab?.destroy();
    await pki?.destroy();
  });

  it("lets an allowed workload through with unmodified curl over IPv4 and IPv6", async () => {
    const v4 = await client.ns.execOk([
      "curl",
      "-sS",
      "--max-time",
      "5",
      `http://${server.ipv4}:${HTTP}/orders`,
    ]);
    expect(v4).toContain("hello from the db workload: GET /orders");
    const v6 = await client.ns.execOk([
      "curl",
      "-sS",
      "--max-time",
      "5",
      `http://[${server.ipv6}]:${HTTP}/v6`,
    ]);
    expect(v6).toContain("GET /v6");
    const flow = await serverEnforcer.waitForFlow(
      (f) => f.direction === "ingress" && f.source.address === canonical(client.ipv6),
    );
    expect(flow).toMatchObject({
      verdict: "allow",
      policy: "db-ingress/ingress/0",
      source: { spiffeId: "spiffe://sigil.local/workload/web", labels: { app: "web" } },
      reporter: { kind: "fastpath" },
    });
    const egress = await clientEnforcer.waitForFlow(
      (f) => f.direction === "egress" && f.destination.address === server.ipv4,
    );
    expect(egress).toMatchObject({
      verdict: "allow",
      destination: { spiffeId: "spiffe://sigil.local/workload/db" },
    });
  });

  it("leaves ports with HTTP rules to the L7 proxy: no fast-path rule for them", async () => {
    const ports = (serverEnforcer.ready as { ports: { inbound: { port: number; path: string }[] } }).ports;
    expect(ports.inbound.find((c) => c.port === API)?.path).toBe("proxy");
    expect(ports.inbound.filter((c) => c.path === "fastpath").map((c) => c.port)).toEqual(PORTS);
    const rules = await server.ns.execOk(["iptables-save", "-t", "mangle"]);
    expect(rules).toContain(String(HTTP));
    expect(rules).not.toContain(String(API));
  });

  it("carries an nc session both ways", async () => {
    const out = await client.ns.execOk([
      "sh",
      "-c",
      `printf 'ping over the fast path\\n' | nc -N -w 5 ${server.ipv4} ${ECHO}`,
    ]);
    expect(out).toBe("ping over the fast path\n");
  });

  it("moves iperf3 bulk data with only handshake packets ever reaching userspace", async () => {
    const before = await serverEnforcer.stats();
    const clientBefore = await clientEnforcer.stats();
    const iperf = server.ns.spawn(["iperf3", "-s", "-1", "-p", String(IPERF), "-J"]);
    const iperfOut = new OutputLines(iperf);
    // iperf3 -s prints nothing until a test ends; wait for the port to listen instead.
    await waitFor("iperf3 listening", async () =>
      (await server.ns.execOk(["ss", "-Htln", `sport = :${IPERF}`])).includes(String(IPERF)),
    );
    const report = JSON.parse(
      await client.ns.execOk(["iperf3", "-c", server.ipv4, "-p", String(IPERF), "-t", "2", "-J"], {
        timeoutMs: 20_000,
      }),
    ) as { end: { sum_received: { bytes: number } } };
    await iperfOut.exit(10_000);
    const received = report.end.sum_received.bytes;
    expect(received).toBeGreaterThan(10_000_000);

    // iperf3 opens two connections (control + data): 2 handshake packets per connection per side.
    const after = await serverEnforcer.stats();
    const clientAfter = await clientEnforcer.stats();
    const queued = (s: typeof after): number => s.queues.reduce((n, q) => n + q.received, 0);
    expect(queued(after) - queued(before)).toBe(4);
    expect(queued(clientAfter) - queued(clientBefore)).toBe(4);
    expect(after.counters.synAccepted - before.counters.synAccepted).toBe(2);
    // The second connection to the same server port is a warm handshake: MAC proofs under the pair key.
    expect(after.counters.macProofs - before.counters.macProofs).toBeGreaterThanOrEqual(1);
    expect(clientAfter.counters.macProofs - clientBefore.counters.macProofs).toBeGreaterThanOrEqual(1);

    // The kernel's own counters agree: the NFQUEUE rules matched only those packets, while the
    // data packets of the flow (≥ bytes / 64 KiB GSO segments) never did.
    const nfqueuePackets = async (ns: LabHost["ns"]): Promise<number> => {
      let total = 0;
      for (const tool of ["iptables", "ip6tables"]) {
        const text = await ns.execOk([tool, "-w", "-t", "mangle", "-L", "-v", "-x", "-n"]);
        for (const line of text.split("\n")) {
          if (line.includes("NFQUEUE")) total += Number(line.trim().split(/\s+/)[0]);
        }
      }
      return total;
    };
    expect(await nfqueuePackets(server.ns)).toBe(queued(after));
    expect(await nfqueuePackets(client.ns)).toBe(queued(clientAfter));
  }, 40_000);

  it("lets a peer without an enforcer in only where a CIDR rule allows it, and resets the rest", async () => {
    const echoed = await other.ns.execOk([
      "sh",
      "-c",
      `printf 'plain peer\\n' | nc -N -w 5 ${server.ipv4} ${ECHO}`,
    ]);
    expect(echoed).toBe("plain peer\n");
    const refused = await other.ns.exec(["curl", "-sS", "--max-time", "5", `http://${server.ipv4}:${HTTP}/`]);
    expect(refused.code).toBe(7); // curl: failed to connect — a RST, not a timeout (28)
    expect(refused.stderr).toMatch(/Couldn't connect|refused/i);
    const denial = await serverEnforcer.waitForFlow(
      (f) => f.source.address === other.ipv4 && f.port === HTTP,
    );
    expect(denial).toMatchObject({ verdict: "deny", policy: null, source: { labels: {} } });
    expect(denial.source.spiffeId).toBeUndefined();
  });

  it("refuses a workload whose identity the policy does not allow (IPv4 and IPv6), and only reports it in observe mode", async () => {
    const batch = await pki.identity("batch", { app: "batch" });
    const otherEnforcer = await EnforcerProcess.start(other.ns, pki, "batch", {
      identity: batch,
      policyFile,
      outboundPorts: PORTS,
      queueFirst: 30,
    });
    const accepted = apps.lines.length;
    for (const url of [`http://${server.ipv4}:${HTTP}/`, `http://[${server.ipv6}]:${HTTP}/`]) {
      const r = await other.ns.exec(["curl", "-sS", "--max-time", "5", url]);
      expect(r.code, r.stderr).toBe(7);
      expect(r.stderr).toMatch(/Couldn't connect|refused/i);
    }
    const denial = await serverEnforcer.waitForFlow(
      (f) => f.source.spiffeId === batch.spiffeId && f.source.address === canonical(other.ipv6),
    );
    expect(denial).toMatchObject({ verdict: "deny", reason: expect.stringMatching(/default deny/) });
    // The application never saw those connections.
    expect(apps.lines.slice(accepted).filter((l) => l.includes("accepted"))).toEqual([]);

    // The same peer against a server in observe mode: let through, reported as "would deny".
    await serverEnforcer.kill();
    serverEnforcer = await EnforcerProcess.start(server.ns, pki, "db-observe", {
      identity: await pki.identity("db-observe", { app: "db" }),
      policyFile,
      inboundPorts: PORTS,
      queueFirst: 10,
      mode: "observe",
    });
    const observed = await other.ns.execOk([
      "curl",
      "-sS",
      "--max-time",
      "5",
      `http://${server.ipv4}:${HTTP}/observed`,
    ]);
    expect(observed).toContain("GET /observed");
    const wouldDeny = await serverEnforcer.waitForFlow((f) => f.source.spiffeId === batch.spiffeId);
    expect(wouldDeny).toMatchObject({ verdict: "allow", wouldDeny: true });
    expect(wouldDeny.reason).toMatch(/observe mode, would deny/);
    await otherEnforcer.kill();
  });

  it("fails closed when the enforcer dies, keeps established flows, and fails open only when asked", async () => {
    const longConn = new OutputLines(
      client.ns.spawn([
        process.execPath,
        "--import",
        "tsx",
        `${REPO_ROOT}test/e2e/fastpath-support/long-connection.ts`,
        server.ipv4,
        String(ECHO),
      ]),
    );
    await longConn.waitFor((l) => (jsonLine(l)?.event === "connected" ? true : undefined));
    longConn.child.stdin?.write("ping\n");
    await longConn.waitFor((l) => (l.includes("ping 1") ? true : undefined));

    await serverEnforcer.kill();
    // New handshakes: the SYN is queued to a queue nobody listens on and dropped.
    const closed = await client.ns.exec(["sh", "-c", `printf 'x\\n' | nc -N -w 2 ${server.ipv4} ${ECHO}`]);
    expect(closed.code).not.toBe(0);
    expect(closed.stdout).toBe("");
    // The established connection is all kernel: it keeps working.
    longConn.child.stdin?.write("ping\n");
    await longConn.waitFor((l) => (l.includes("ping 2") ? true : undefined));

    // Opt-in fail-open: rules with --queue-bypass; with that enforcer gone too, handshakes pass.
    const db = await pki.identity("db2", { app: "db" });
    const openEnforcer = await EnforcerProcess.start(server.ns, pki, "db-open", {
      identity: db,
      policyFile,
      inboundPorts: PORTS,
      queueFirst: 40,
      failOpen: true,
    });
    await openEnforcer.kill();
    const open = await client.ns.execOk([
      "sh",
      "-c",
      `printf 'fail-open\\n' | nc -N -w 5 ${server.ipv4} ${ECHO}`,
    ]);
    expect(open).toBe("fail-open\n");
    longConn.child.stdin?.write("ping\n");
    await longConn.waitFor((l) => (l.includes("ping 3") ? true : undefined));
    longConn.child.kill();
  }, 60_000);
});
