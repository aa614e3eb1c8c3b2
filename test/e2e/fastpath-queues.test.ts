/**
 * The fast path on several queues between ONE pair of hosts: the rules pick a handshake's queue by
 * its client port, so connections between the same two addresses reach both workers, while each
 * connection's SYN and SYN-ACK meet the same worker (otherwise the server's SYN-ACK would find no
 * client nonce to answer and the client's would match no nonce it sent: the connection would
 * fail), and a replay of a captured SYN reaches the worker whose replay cache holds its nonce.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { FlowRecord } from "../../core/flow.ts";
import type { EnforcerStats } from "../../sidecar/fastpath/enforcer.ts";
import { queueForClientPort } from "../../sidecar/fastpath/rules.ts";
import { NetnsLab, waitFor } from "../support/netns.ts";
import type { LabHost } from "../support/netns.ts";
import type { EnforcerProcess } from "./fastpath-support/enforcer-process.ts";
import { jsonLine } from "./fastpath-support/process-output.ts";
import { TestPki } from "./fastpath-support/pki.ts";
import { startAppServers, startEnforcerPair, webToDbPolicy } from "./fastpath-support/lab.ts";
import { sendRawIpv4, startCapture } from "./fastpath-support/raw-packets.ts";

const HTTP = 8080;
const ECHO = 7000;
const SERVER_QUEUES = 30;
const CLIENT_QUEUES = 40;

const POLICY = webToDbPolicy([HTTP, ECHO]);

/** Packets each queue has received, by queue number. */
function perQueue(stats: EnforcerStats): Map<number, number> {
  return new Map(stats.queues.map((q) => [q.queue, q.received]));
}

function delta(before: Map<number, number>, after: Map<number, number>): Map<number, number> {
  return new Map([...after].map(([q, n]) => [q, n - (before.get(q) ?? 0)]));
}

describe.sequential("fast path on two queues between one pair of hosts", () => {
  let lab: NetnsLab;
  let pki: TestPki;
  let client: LabHost;
  let server: LabHost;
  let attacker: LabHost;
  let serverEnforcer: EnforcerProcess;
  let clientEnforcer: EnforcerProcess;

  beforeAll(async () => {
    lab = await NetnsLab.create(["client", "server", "attacker"]);
    client = lab.host("client");
    server = lab.host("server");
    attacker = lab.host("attacker");
    pki = await TestPki.create();
    const policyFile = await pki.file("policy.yaml", POLICY);
    await startAppServers(server, HTTP, ECHO);
    ({ server: serverEnforcer, client: clientEnforcer } = await startEnforcerPair(pki, server, client, {
      policyFile,
      ports: [HTTP, ECHO],
      queueFirst: { server: SERVER_QUEUES, client: CLIENT_QUEUES },
      queueCount: 2,
    }));
  }, 60_000);

  afterAll(async () => {
    await lab?.destroy();
    await pki?.destroy();
  });

  it("spreads connections between the same two addresses over both workers, each handshake on one (IPv4 and IPv6)", async () => {
    const [serverBefore, clientBefore] = [await serverEnforcer.stats(), await clientEnforcer.stats()];
    // A local port once per connection (a closed one lingers in TIME_WAIT, and would block the bind).
    const ipv4Ports = [42000, 42002, 42004, 42006, 42008, 42010];
    const ipv6Ports = ipv4Ports.map((p) => p + 100);
    const connections: [url: string, port: number][] = [
      ...ipv4Ports.map((p): [string, number] => [`http://${server.ipv4}:${HTTP}/`, p]),
      ...ipv6Ports.map((p): [string, number] => [`http://[${server.ipv6}]:${HTTP}/`, p]),
    ];
    for (const [url, port] of connections) {
      const body = await client.ns.execOk([
        "curl",
        "-sS",
        "-g",
        "--max-time",
        "5",
        "--local-port",
        String(port),
        url,
      ]);
      expect(body).toContain("hello from the db workload");
    }
    const [serverAfter, clientAfter] = [await serverEnforcer.stats(), await clientEnforcer.stats()];

    // Every connection: its SYN and its SYN-ACK, both on the queue its client port selects.
    const expected = (first: number): Map<number, number> => {
      const m = new Map([
        [first, 0],
        [first + 1, 0],
      ]);
      for (const [, port] of connections) {
        const q = queueForClientPort(port, first, 2);
        m.set(q, (m.get(q) ?? 0) + 2);
      }
      return m;
    };
    expect(expected(SERVER_QUEUES).get(SERVER_QUEUES)).toBeGreaterThan(0);
    expect(expected(SERVER_QUEUES).get(SERVER_QUEUES + 1)).toBeGreaterThan(0);
    expect(delta(perQueue(serverBefore), perQueue(serverAfter))).toEqual(expected(SERVER_QUEUES));
    expect(delta(perQueue(clientBefore), perQueue(clientAfter))).toEqual(expected(CLIENT_QUEUES));

    const count = connections.length;
    const s = (k: "synAccepted" | "synAckSigned"): number =>
      serverAfter.counters[k] - serverBefore.counters[k];
    const c = (k: "synSigned" | "synAckAccepted"): number =>
      clientAfter.counters[k] - clientBefore.counters[k];
    expect([s("synAccepted"), s("synAckSigned"), c("synSigned"), c("synAckAccepted")]).toEqual([
      count,
      count,
      count,
      count,
    ]);
    expect(serverAfter.counters.rejections).toEqual(serverBefore.counters.rejections);
    expect(clientAfter.counters.rejections).toEqual(clientBefore.counters.rejections);
  });

  it("shares a verified server identity between the workers, so a connection on the other queue is warm", async () => {
    // A server port this client has not met yet: its first SYN there is signed, not MAC'd.
    const connect = async (port: number): Promise<void> => {
      const echoed = await client.ns.execOk([
        "sh",
        "-c",
        `printf 'hello\\n' | nc -N -w 5 -p ${port} ${server.ipv4} ${ECHO}`,
      ]);
      expect(echoed).toBe("hello\n");
    };
    const before = await clientEnforcer.stats();
    const [first, second] = [44000, 44002];
    expect(queueForClientPort(first, CLIENT_QUEUES, 2)).not.toBe(
      queueForClientPort(second, CLIENT_QUEUES, 2),
    );
    await connect(first);
    await waitFor(
      "the other worker to learn the server",
      async () => (await clientEnforcer.stats()).counters.serversShared > before.counters.serversShared,
    );
    const middle = await clientEnforcer.stats();
    expect(middle.counters.macProofs - before.counters.macProofs).toBe(0);
    await connect(second);
    const after = await clientEnforcer.stats();
    // On a worker that never met this server, the SYN went out with a MAC and the SYN-ACK answered in kind.
    expect(after.counters.macProofs - middle.counters.macProofs).toBe(1);
    expect(after.counters.synSigned - middle.counters.synSigned).toBe(1);
  });

  it("refuses a replayed SYN on whichever worker its connection's port selects", async () => {
    let replays = 0;
    /** The n-th replay refusal the server reported (1-based), waiting for it if needed. */
    const replayRefusal = (n: number): Promise<FlowRecord> => {
      let seen = 0;
      return serverEnforcer.out.waitFor((l) => {
        const j = jsonLine(l) as { event?: string; flow?: FlowRecord } | undefined;
        const f = j?.event === "flow" ? j.flow : undefined;
        return f?.verdict === "deny" && /\(replayed\)/.test(f.reason) && ++seen === n ? f : undefined;
      });
    };
    for (const port of [43000, 43002]) {
      const capture = await startCapture(
        server.ns,
        server.ifname,
        `${pki.dir}/syn-${port}.pcap`,
        `ip and tcp src port ${port} and tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn`,
        1,
      );
      const body = await client.ns.execOk([
        "curl",
        "-sS",
        "--max-time",
        "5",
        "--local-port",
        String(port),
        `http://${server.ipv4}:${HTTP}/`,
      ]);
      expect(body).toContain("hello from the db workload");
      const [syn] = await capture.done();
      const before = perQueue(await serverEnforcer.stats());

      await sendRawIpv4(attacker.ns, syn as Buffer);
      const refused = await replayRefusal(++replays);
      expect(refused.source.address).toBe(client.ipv4);
      const queue = queueForClientPort(port, SERVER_QUEUES, 2);
      const moved = delta(before, perQueue(await serverEnforcer.stats()));
      expect(moved.get(queue)).toBe(1);
      expect(moved.get(queue === SERVER_QUEUES ? SERVER_QUEUES + 1 : SERVER_QUEUES)).toBe(0);
    }
  });
});
