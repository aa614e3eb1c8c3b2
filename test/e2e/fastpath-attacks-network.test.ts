/**
 * Attacks on the fast path from a third host on the network, with real packets: a valid token moved
 * to another source address, destination address or destination port; a genuine SYN-ACK replayed
 * into a client's new connection; a flood of token-carrying SYNs that fills the enforcer's queue (it
 * must drop, never let through, with or without fail-open, and say so in its counters); and what the
 * fast path does not protect once a connection is accepted: data and a RST injected in sequence
 * reach the endpoints (sidecar/fastpath/README.md, SECURITY.md).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { extractToken, insertToken } from "../../native/index.ts";
import { encodeToken, newNonce } from "../../sidecar/fastpath/token.ts";
import { NetnsLab, waitFor } from "../support/netns.ts";
import type { LabHost } from "../support/netns.ts";
import { EnforcerProcess } from "./fastpath-support/enforcer-process.ts";
import { FLAGS, fixChecksums4, forgedSegment, segmentFields } from "./fastpath-support/forged-segments.ts";
import { startAppServers, startEnforcerPair, webToDbPolicy } from "./fastpath-support/lab.ts";
import { TestPki } from "./fastpath-support/pki.ts";
import type { IdentityFiles } from "./fastpath-support/pki.ts";
import { OutputLines } from "./fastpath-support/process-output.ts";
import { sendRawIpv4, sendRawIpv4Burst, startCapture } from "./fastpath-support/raw-packets.ts";

const EXID = 0x5347;
const HTTP = 8080;
const ECHO = 7000;
const POLICY = webToDbPolicy([HTTP, ECHO]);
/** Long enough that no token in this suite ages out while the machine is slow (see fastpath-attacks). */
const WINDOW_MS = 300_000;
/** Small, so a burst from one process overflows it. */
const QUEUE_LENGTH = 16;
const FLOOD = 3000;
const SERVER_QUEUE = 10;

describe.sequential("fast path under attack from the network", () => {
  let lab: NetnsLab;
  let pki: TestPki;
  let client: LabHost;
  let server: LabHost;
  let attacker: LabHost;
  let web: IdentityFiles;
  let policyFile: string;
  let serverEnforcer: EnforcerProcess;
  let clientEnforcer: EnforcerProcess;
  /** A second address of the server host, which no token names. */
  let serverAlias: string;

  beforeAll(async () => {
    lab = await NetnsLab.create(["client", "server", "attacker"], { subnet: 7 });
    client = lab.host("client");
    server = lab.host("server");
    attacker = lab.host("attacker");
    serverAlias = server.ipv4.replace(/\.\d+$/, ".200");
    await server.ns.execOk(["ip", "addr", "add", `${serverAlias}/24`, "dev", server.ifname]);
    pki = await TestPki.create();
    policyFile = await pki.file("policy.yaml", POLICY);
    web = await pki.identity("web", { app: "web" });
    const db = await pki.identity("db", { app: "db" });
    await startAppServers(server, HTTP, ECHO);
    ({ server: serverEnforcer, client: clientEnforcer } = await startEnforcerPair(pki, server, client, {
      policyFile,
      ports: [HTTP, ECHO],
      queueCount: 1,
      queueFirst: { server: SERVER_QUEUE, client: 20 },
      windowMs: WINDOW_MS,
      serverQueueLength: QUEUE_LENGTH,
      identities: { web, db },
    }));
  }, 60_000);

  afterAll(async () => {
    await lab?.destroy();
    await pki?.destroy();
  });

  /** A SYN from `src` to `dst`:`dport` carrying a valid token made for client:`sport` → server:ECHO. */
  function synWithClientToken(src: string, dst: string, sport: number, dport: number): Buffer {
    const token = encodeToken(web, {
      type: "syn",
      nonce: newNonce(),
      timestampMs: Date.now(),
      tuple: { clientAddress: client.ipv4, clientPort: sport, serverAddress: server.ipv4, serverPort: ECHO },
    });
    const syn = forgedSegment({ src, dst, sport, dport, seq: 0x10000, ack: 0, flags: FLAGS.SYN });
    return insertToken(syn, token, EXID);
  }

  /** Injects from the attacker and returns the server enforcer's next decision: the one on it. */
  async function injectedDecision(packet: Buffer): Promise<{ verdict: string; reason: string }> {
    const next = serverEnforcer.flows().length;
    await sendRawIpv4(attacker.ns, packet);
    return serverEnforcer.flowAt(next);
  }

  it("refuses a valid token moved to another source address, destination address or destination port", async () => {
    const control = await injectedDecision(synWithClientToken(client.ipv4, server.ipv4, 42001, ECHO));
    expect(control.verdict, "the unmoved token is accepted").toBe("allow");
    const moves: [string, Buffer][] = [
      ["source address", synWithClientToken(attacker.ipv4, server.ipv4, 42002, ECHO)],
      ["destination address", synWithClientToken(client.ipv4, serverAlias, 42003, ECHO)],
      ["destination port", synWithClientToken(client.ipv4, server.ipv4, 42004, HTTP)],
    ];
    for (const [what, packet] of moves) {
      const decision = await injectedDecision(packet);
      expect(decision.verdict, what).toBe("deny");
      expect(decision.reason, what).toMatch(/token rejected \(bad-signature\)/);
    }
  });

  it("refuses a genuine SYN-ACK replayed into the client's next connection", async () => {
    const synAckFilter = `ip and tcp src port ${ECHO} and tcp[tcpflags] & (tcp-syn|tcp-ack) == (tcp-syn|tcp-ack)`;
    const capture = await startCapture(client.ns, client.ifname, `${pki.dir}/synack.pcap`, synAckFilter, 1);
    const echoed = await client.ns.execOk([
      "sh",
      "-c",
      `printf 'first\\n' | nc -N -w 5 ${server.ipv4} ${ECHO}`,
    ]);
    expect(echoed).toBe("first\n");
    const [genuine] = await capture.done();
    const old = extractToken(genuine as Buffer, EXID);
    expect(old, "the SYN-ACK on the wire carries a token").not.toBeNull();

    // The client's next SYN never reaches the server's stack: the attacker answers it instead.
    const port = 43001;
    await server.ns.execOk([
      "iptables",
      "-t",
      "raw",
      "-I",
      "PREROUTING",
      "-p",
      "tcp",
      "--sport",
      String(port),
      "-j",
      "DROP",
    ]);
    const synCapture = await startCapture(
      client.ns,
      client.ifname,
      `${pki.dir}/next-syn.pcap`,
      `ip and tcp src port ${port} and tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn`,
      1,
    );
    const nc = new OutputLines(
      client.ns.spawn(["nc", "-v", "-p", String(port), "-w", "10", server.ipv4, String(ECHO)]),
    );
    const [syn] = await synCapture.done();
    const isn = segmentFields(syn as Buffer).seq;
    const replay = Buffer.from(old?.packet as Buffer);
    replay.writeUInt16BE(port, 22);
    replay.writeUInt32BE((isn + 1) >>> 0, 28);
    await sendRawIpv4(attacker.ns, insertToken(fixChecksums4(replay), old?.token as Buffer, EXID));

    const refusal = await clientEnforcer.waitForFlow((f) => f.verdict === "deny");
    expect(refusal.reason).toMatch(/SYN-ACK token rejected \(nonce-mismatch\)/);
    // The refused SYN-ACK became a RST for the client: its connect fails at once, it never connects.
    expect(await nc.exit(10_000)).not.toBe(0);
    expect(nc.stderrText).toMatch(/refused/i);
  });

  /** Floods the server with token-carrying SYNs from the attacker; returns SYN-ACKs the attacker got. */
  async function flood(firstPort: number): Promise<number> {
    const packets = Array.from({ length: FLOOD }, (_, i) =>
      synWithClientToken(attacker.ipv4, server.ipv4, firstPort + i, ECHO),
    );
    const answers = new OutputLines(
      attacker.ns.spawn([
        "tcpdump",
        "-i",
        attacker.ifname,
        "-n",
        "-l",
        `ip and src host ${server.ipv4} and tcp[tcpflags] & (tcp-syn|tcp-ack) == (tcp-syn|tcp-ack)`,
      ]),
    );
    await waitFor("tcpdump to start capturing", () => answers.stderrText.includes("listening on"));
    await sendRawIpv4Burst(attacker.ns, packets, `${pki.dir}/flood-${firstPort}.hex`);
    // Every flood SYN is decided or dropped once the kernel holds none of them for a verdict.
    await waitFor(
      "the server's queue to drain",
      async () => (await serverEnforcer.stats()) && (await kernelQueue()).waiting === 0,
      { timeoutMs: 30_000 },
    );
    answers.child.kill("SIGINT");
    await answers.exit(10_000);
    return answers.lines.filter((l) => l.trim() !== "").length;
  }

  async function kernelQueue(): Promise<{ waiting: number; droppedFull: number }> {
    const line = await serverEnforcer.statsLine();
    const q = line.kernelQueues.find((k) => k.queue === SERVER_QUEUE);
    if (!q) throw new Error("the server's queue is missing from the kernel's counters");
    return q;
  }

  async function stillServes(): Promise<void> {
    const echoed = await client.ns.execOk([
      "sh",
      "-c",
      `printf 'after\\n' | nc -N -w 10 ${server.ipv4} ${ECHO}`,
    ]);
    expect(echoed).toBe("after\n");
  }

  it("drops a flood of token-carrying SYNs that overflows the queue, lets none through, and counts it", async () => {
    const before = (await kernelQueue()).droppedFull;
    const answered = await flood(20000);
    expect((await kernelQueue()).droppedFull - before, "the flood overflowed the queue").toBeGreaterThan(0);
    expect(answered, "SYN-ACKs the flood got from the server").toBe(0);
    expect((await serverEnforcer.statsLine()).failOpen).toBe(false);
    await stillServes();
  }, 90_000);

  it("drops the same flood with fail-open (--queue-bypass) chosen, and says fail-open in its ready and stats lines", async () => {
    await serverEnforcer.kill();
    serverEnforcer = await EnforcerProcess.start(server.ns, pki, "db-fail-open", {
      identity: await pki.identity("db", { app: "db" }),
      policyFile,
      inboundPorts: [HTTP, ECHO],
      queueFirst: SERVER_QUEUE,
      queueCount: 1,
      queueLength: QUEUE_LENGTH,
      windowMs: WINDOW_MS,
      failOpen: true,
    });
    expect(serverEnforcer.ready.failOpen).toBe(true);
    expect(serverEnforcer.out.stderrText).toMatch(/WARNING: fail-open \(--queue-bypass\)/);
    const before = (await kernelQueue()).droppedFull;
    const answered = await flood(30000);
    expect((await kernelQueue()).droppedFull - before, "the flood overflowed the queue").toBeGreaterThan(0);
    expect(answered, "SYN-ACKs the flood got from the server").toBe(0);
    expect((await serverEnforcer.statsLine()).failOpen).toBe(true);
    await stillServes();
  }, 90_000);

  it("does not protect an accepted connection: in-sequence data and a RST injected by a third host reach the endpoints", async () => {
    const port = 44001;
    const data = await startCapture(
      server.ns,
      server.ifname,
      `${pki.dir}/data.pcap`,
      `ip and tcp port ${port} and tcp[tcpflags] & tcp-push != 0`,
      2,
    );
    const nc = new OutputLines(client.ns.spawn(["nc", "-v", "-p", String(port), server.ipv4, String(ECHO)]));
    nc.child.stdin?.write("ping\n");
    await nc.waitFor((l) => (l === "ping" ? true : undefined));
    const [fromClient, fromServer] = (await data.done()).map(segmentFields) as [
      ReturnType<typeof segmentFields>,
      ReturnType<typeof segmentFields>,
    ];
    const clientNext = fromClient.seq + fromClient.payload.length;
    const serverNext = fromServer.seq + fromServer.payload.length;

    // Data in the client's sequence space, sent by the attacker: the server's application reads it
    // (the echo application writes it back; the client, which never sent it, discards that echo).
    const echoed = await startCapture(
      server.ns,
      server.ifname,
      `${pki.dir}/echoed.pcap`,
      `ip and tcp src port ${ECHO} and tcp dst port ${port} and tcp[tcpflags] & tcp-push != 0`,
      1,
    );
    const injected = Buffer.from("INJECTED\n");
    await sendRawIpv4(
      attacker.ns,
      forgedSegment({
        src: client.ipv4,
        dst: server.ipv4,
        sport: port,
        dport: ECHO,
        seq: clientNext,
        ack: serverNext,
        flags: FLAGS.PSH | FLAGS.ACK,
        payload: injected,
      }),
    );
    const [echo] = await echoed.done();
    expect(segmentFields(echo as Buffer).payload.toString()).toBe(injected.toString());

    // A RST at the client's next expected sequence number ends the connection for the client.
    await sendRawIpv4(
      attacker.ns,
      forgedSegment({
        src: server.ipv4,
        dst: client.ipv4,
        sport: ECHO,
        dport: port,
        seq: serverNext,
        ack: 0,
        flags: FLAGS.RST,
      }),
    );
    await nc.exit(10_000);
    expect(nc.lines).not.toContain("INJECTED");
  });
});
