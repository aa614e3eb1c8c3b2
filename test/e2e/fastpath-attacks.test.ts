/**
 * Attacks on the fast-path handshake with real packets: a genuine token-carrying SYN is captured
 * off the wire and replayed, re-targeted or tampered with, and tokens are crafted with an old
 * timestamp, an untrusted CA, a revoked identity and an expired certificate; each is injected from
 * a third host and must be refused for the right reason. A server whose SYN-ACK token does not
 * verify is refused by the client side.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { extractToken, insertToken, parseTcp } from "../../native/index.ts";
import { encodeToken, newNonce } from "../../sidecar/fastpath/token.ts";
import { NetnsLab } from "../support/netns.ts";
import type { LabHost } from "../support/netns.ts";
import { EnforcerProcess } from "./fastpath-support/enforcer-process.ts";
import { TestPki } from "./fastpath-support/pki.ts";
import { startAppServers, startEnforcerPair, webToDbPolicy } from "./fastpath-support/lab.ts";
import type { IdentityFiles } from "./fastpath-support/pki.ts";
import { sendRawIpv4, startCapture } from "./fastpath-support/raw-packets.ts";

const EXID = 0x5347;
const HTTP = 8080;
const ECHO = 7000;
/** Connections made once both sides know each other: warm handshakes. */
const WARM_CONNECTIONS = 6;

const POLICY = webToDbPolicy([HTTP, ECHO]);
/**
 * The enforcers' token window, the longest the config allows: a token captured in beforeAll
 * stays inside it for the whole suite however slow the machine, so a test that expects one refusal
 * (bad-signature, replayed) cannot see "expired" instead. Tokens meant to be out of time are placed
 * a minute beyond it.
 */
const WINDOW_MS = 300_000;
const OUT_OF_WINDOW_MS = WINDOW_MS + 60_000;

describe.sequential("fast path under attack: crafted and replayed handshake packets", () => {
  let lab: NetnsLab;
  let pki: TestPki;
  let client: LabHost;
  let server: LabHost;
  let attacker: LabHost;
  let web: IdentityFiles;
  let serverEnforcer: EnforcerProcess;
  let clientEnforcer: EnforcerProcess;
  let policyFile: string;
  /** A genuine SYN from the client, token and all, as captured on the server's interface. */
  let captured: Buffer;
  let flowsSeen = 0;

  // Time bounds in this suite only end a broken run: on a loaded machine two enforcers take a minute
  // to start and every injection spawns a process.
  beforeAll(async () => {
    lab = await NetnsLab.create(["client", "server", "attacker"]);
    client = lab.host("client");
    server = lab.host("server");
    attacker = lab.host("attacker");
    pki = await TestPki.create();
    policyFile = await pki.file("policy.yaml", POLICY);
    web = await pki.identity("web", { app: "web" });
    const db = await pki.identity("db", { app: "db" });
    const revocations = await pki.file(
      "revocations.json",
      JSON.stringify({
        sequence: 1,
        entries: [
          {
            spiffeId: "spiffe://sigil.local/workload/revoked",
            revokedAtMs: Date.now() + 60_000,
            expiresAtMs: Date.now() + 7_200_000,
            reason: "key compromise",
          },
        ],
      }),
    );
    await startAppServers(server, HTTP, ECHO);
    ({ server: serverEnforcer, client: clientEnforcer } = await startEnforcerPair(pki, server, client, {
      policyFile,
      ports: [HTTP, ECHO],
      revocationsFile: revocations,
      windowMs: WINDOW_MS,
      identities: { web, db },
    }));

    const capture = await startCapture(
      server.ns,
      server.ifname,
      `${pki.dir}/syn.pcap`,
      `ip and tcp dst port ${ECHO} and tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn`,
      1,
    );
    const echoed = await client.ns.execOk([
      "sh",
      "-c",
      `printf 'genuine\\n' | nc -N -w 5 ${server.ipv4} ${ECHO}`,
    ]);
    expect(echoed).toBe("genuine\n");
    const [syn] = await capture.done();
    captured = syn as Buffer;
    expect(parseTcp(captured, EXID).hasToken).toBe(true);
    const genuine = await serverEnforcer.flowAt(flowsSeen++);
    expect(genuine.verdict).toBe("allow");
  }, 180_000);

  afterAll(async () => {
    await lab?.destroy();
    await pki?.destroy();
  });

  /** Injects `packet` from the attacker host and returns the server enforcer's decision on it. */
  async function inject(packet: Buffer): Promise<{ verdict: string; reason: string }> {
    await sendRawIpv4(attacker.ns, packet);
    return serverEnforcer.flowAt(flowsSeen++);
  }

  /** The captured SYN, moved to another client port, with `token` in place of the genuine one. */
  function synWith(token: Buffer, clientPort: number): Buffer {
    const stripped = extractToken(captured, EXID)?.packet as Buffer;
    const moved = Buffer.from(stripped);
    moved.writeUInt16BE(clientPort, 20);
    return insertToken(moved, token, EXID);
  }

  function tupleFor(clientPort: number) {
    return { clientAddress: client.ipv4, clientPort, serverAddress: server.ipv4, serverPort: ECHO };
  }

  async function freshToken(
    who: IdentityFiles,
    clientPort: number,
    timestampMs = Date.now(),
  ): Promise<Buffer> {
    return encodeToken(who, { type: "syn", nonce: newNonce(), timestampMs, tuple: tupleFor(clientPort) });
  }

  it("accepts a correctly crafted token (the control that makes the refusals below meaningful)", async () => {
    const decision = await inject(synWith(await freshToken(web, 41001), 41001));
    expect(decision).toMatchObject({ verdict: "allow" });
  });

  it("refuses the captured SYN replayed verbatim", async () => {
    const decision = await inject(captured);
    expect(decision.verdict).toBe("deny");
    expect(decision.reason).toMatch(/token rejected \(replayed\)/);
  });

  it("refuses the captured token moved onto another connection", async () => {
    const token = extractToken(captured, EXID)?.token as Buffer;
    const decision = await inject(synWith(token, 41002));
    expect(decision.verdict).toBe("deny");
    expect(decision.reason).toMatch(/token rejected \(bad-signature\)/);
  });

  it("refuses a forged signature and a forged label", async () => {
    const token = Buffer.from(extractToken(captured, EXID)?.token as Buffer);
    const badSig = Buffer.from(token);
    badSig.writeUInt8((badSig.at(-5) as number) ^ 0x01, badSig.length - 5);
    const original = parseTcp(captured, EXID).srcPort;
    expect((await inject(synWith(badSig, original))).reason).toMatch(/token rejected \(bad-signature\)/);

    // Rewrite the label value inside the certificate (same length): the CA's signature breaks.
    const at = token.indexOf(Buffer.from("web"));
    expect(at).toBeGreaterThan(0);
    const badLabel = Buffer.from(token);
    badLabel.write("dbx", at);
    const decision = await inject(synWith(badLabel, original));
    expect(decision.verdict).toBe("deny");
    expect(decision.reason).toMatch(/token rejected \((untrusted|malformed)\)/);
  });

  it("refuses a token outside its time window", async () => {
    const old = await freshToken(web, 41003, Date.now() - OUT_OF_WINDOW_MS);
    expect((await inject(synWith(old, 41003))).reason).toMatch(/token rejected \(expired\)/);
    const future = await freshToken(web, 41004, Date.now() + OUT_OF_WINDOW_MS);
    expect((await inject(synWith(future, 41004))).reason).toMatch(/token rejected \(from-future\)/);
  });

  it("refuses an identity from another CA, a revoked identity and an expired certificate", async () => {
    const forged = await pki.identity("web-forged", { app: "web" }, { untrusted: true });
    expect((await inject(synWith(await freshToken(forged, 41005), 41005))).reason).toMatch(
      /token rejected \(untrusted\)/,
    );
    const revoked = await pki.identity("revoked", { app: "web" });
    expect((await inject(synWith(await freshToken(revoked, 41006), 41006))).reason).toMatch(
      /token rejected \(revoked\)/,
    );
    const stale = await pki.identity("stale", { app: "web" }, { now: new Date(Date.now() - 7_200_000) });
    expect((await inject(synWith(await freshToken(stale, 41007), 41007))).reason).toMatch(
      /token rejected \(expired\)/,
    );
  });

  it("refuses malformed token bytes without crashing the enforcer", async () => {
    const decision = await inject(synWith(Buffer.from("not a token at all"), 41008));
    expect(decision.reason).toMatch(/token rejected \(malformed\)/);
    // Still deciding afterwards.
    expect((await inject(synWith(await freshToken(web, 41009), 41009))).verdict).toBe("allow");
  });

  it("decides warm (MAC) handshakes natively, and refuses them replayed, moved or with a flipped MAC byte", async () => {
    const handledBefore = (await serverEnforcer.stats()).counters.warm.peerSyn.handled;
    const capture = await startCapture(
      server.ns,
      server.ifname,
      `${pki.dir}/warm.pcap`,
      `ip and tcp dst port ${ECHO} and tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn`,
      WARM_CONNECTIONS,
    );
    for (let i = 0; i < WARM_CONNECTIONS; i++) {
      const echoed = await client.ns.execOk([
        "sh",
        "-c",
        `printf 'warm ${i}\\n' | nc -N -w 5 ${server.ipv4} ${ECHO}`,
      ]);
      expect(echoed).toBe(`warm ${i}\n`);
      expect((await serverEnforcer.flowAt(flowsSeen++)).verdict).toBe("allow");
    }
    const syns = await capture.done();
    // Each of the server's two workers may meet the client once in JS; every other SYN is native.
    const handled = (await serverEnforcer.stats()).counters.warm.peerSyn.handled - handledBefore;
    expect(handled).toBeGreaterThanOrEqual(WARM_CONNECTIONS - 2);
    for (const [i, syn] of syns.entries()) {
      const token = extractToken(syn, EXID)?.token as Buffer;
      expect(token[1], "a MAC-proof SYN token").toBe(3);
      expect((await inject(syn)).reason).toMatch(/token rejected \(replayed\)/);
      expect((await inject(synWith(token, 41100 + i))).reason).toMatch(/token rejected \(bad-signature\)/);
      const flipped = Buffer.from(token);
      flipped.writeUInt8((flipped.at(-1) as number) ^ 0x80, flipped.length - 1);
      const port = parseTcp(syn, EXID).srcPort;
      expect((await inject(synWith(flipped, port))).reason).toMatch(/token rejected \(bad-signature\)/);
    }
  }, 120_000);

  it("makes the client refuse a SYN-ACK whose token does not verify", async () => {
    await serverEnforcer.kill();
    const impostor = await pki.identity("db-impostor", { app: "db" }, { untrusted: true });
    await EnforcerProcess.start(server.ns, pki, "impostor", {
      identity: impostor,
      policyFile,
      inboundPorts: [HTTP, ECHO],
      queueFirst: 40,
    });
    // Exit 7 (connection refused) is the RST the client enforcer made; a dropped SYN-ACK would time out (28).
    const r = await client.ns.exec(["curl", "-sS", "--max-time", "5", `http://${server.ipv4}:${HTTP}/`]);
    expect(r.code, r.stderr).toBe(7);
    const refusal = await clientEnforcer.waitForFlow((f) => f.verdict === "deny");
    expect(refusal).toMatchObject({ direction: "egress", port: HTTP });
    expect(refusal.reason).toMatch(/SYN-ACK token rejected \(untrusted\)/);
  });
});
