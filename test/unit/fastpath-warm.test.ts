/**
 * The fast path's warm handshake in native code, checked against the JS path it stands in for: two
 * real enforcers (client app=web, server app=db) with identities from a real CA decide real SYN and
 * SYN-ACK bytes handed over directly, warm table first and then JS, as a queue does, on a clock the
 * test moves. Each case shows which side of the split decided a packet (the warm table's counters)
 * and what it decided (verdict, mark, flow record).
 */
import { createPublicKey } from "node:crypto";
import { readFile } from "node:fs/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { FlowRecord } from "../../core/flow.ts";
import { compilePolicySet, parsePolicyDocuments } from "../../core/policy/index.ts";
import type { EnforcementMode } from "../../core/policy/index.ts";
import { parseBundle } from "../../core/svid/bundle.ts";
import type { TrustBundle } from "../../core/svid/bundle.ts";
import { RevocationIndex } from "../../core/svid/revocation.ts";
import { TCP_FLAGS, VERDICT, extractToken, insertToken, parseTcp } from "../../native/index.ts";
import type { VerdictCode } from "../../native/index.ts";
import { FastPathEnforcer } from "../../sidecar/fastpath/enforcer.ts";
import type { LocalIdentity, PacketKind } from "../../sidecar/fastpath/enforcer.ts";
import { loadLocalIdentity } from "../../sidecar/fastpath/local-identity.ts";
import {
  MARK_ACCEPTED,
  MARK_DENY,
  MARK_MASK,
  MARK_PENDING_IN,
  MARK_PENDING_OUT,
  MARK_REFUSED,
} from "../../sidecar/fastpath/marks.ts";
import {
  chainDigest,
  decodeToken,
  derivePairKey,
  encodeToken,
  newNonce,
} from "../../sidecar/fastpath/token.ts";
import { webToDbPolicy } from "../e2e/fastpath-support/lab.ts";
import { TestPki, TRUST_DOMAIN } from "../e2e/fastpath-support/pki.ts";
import { segment, segment6 } from "../e2e/fastpath-support/segments.ts";

const EXID = 0x5347;
const WINDOW_MS = 10_000;
const SETTINGS = { queueFirst: 0, queueCount: 1, exid: EXID, windowMs: WINDOW_MS, maxTokenBytes: 1400 };
const HOOK_IN = 0;
const HOOK_OUT = 3;
const CLIENT = [198, 18, 0, 1];
const SERVER = [198, 18, 0, 2];
const CLIENT_ADDRESS = "198.18.0.1";
const SERVER_ADDRESS = "198.18.0.2";
const PORT = 5432;
const v6 = (last: number): number[] => [0x20, 0x01, 0, 0x02, ...new Array<number>(11).fill(0), last];
const CLIENT6 = v6(1);
const SERVER6 = v6(2);
const KINDS: readonly PacketKind[] = ["ourSyn", "peerSyn", "ourSynAck", "peerSynAck"];

const ALLOW_POLICY = webToDbPolicy([PORT]);
const DENY_POLICY = webToDbPolicy(
  [PORT],
  [`{ action: deny, from: [ { matchLabels: { app: web } } ], ports: [ ${PORT} ] }`],
);
/** The same, and web's own egress rule denies it db on the port. */
const WEB_EGRESS_DENY = `${ALLOW_POLICY}---
apiVersion: sigil.dev/v1
kind: AuthorizationPolicy
metadata: { name: web-egress }
spec:
  selector: { matchLabels: { app: web } }
  egress:
    - { action: deny, to: [ { matchLabels: { app: db } } ], ports: [ ${PORT} ] }
`;

let pki: TestPki;
let bundle: TrustBundle;
let web: LocalIdentity;
let db: LocalIdentity;
/** Second SVIDs for the same workloads, as a rotation brings them. */
let rotatedDb: LocalIdentity;
let rotatedWeb: LocalIdentity;

async function identity(
  name: string,
  labels: Record<string, string>,
  ttlSeconds?: number,
): Promise<LocalIdentity> {
  const files = await pki.identity(name, labels, ttlSeconds ? { ttlSeconds } : {});
  return loadLocalIdentity(await readFile(files.svidFile, "utf8"), await readFile(files.keyFile, "utf8"));
}

beforeAll(async () => {
  pki = await TestPki.create();
  bundle = parseBundle(TRUST_DOMAIN, await readFile(pki.bundleFile, "utf8"));
  web = await identity("web", { app: "web" });
  db = await identity("db", { app: "db" });
  rotatedDb = await identity("db", { app: "db" });
  rotatedWeb = await identity("web", { app: "web" });
});
afterAll(async () => {
  await pki?.destroy();
});

function policyState(yaml: string, mode: EnforcementMode = "enforce") {
  const parsed = parsePolicyDocuments(yaml, "warm.yaml");
  if (!parsed.ok) throw new Error(`test policy invalid: ${JSON.stringify(parsed)}`);
  return { set: compilePolicySet(parsed.documents.map((d) => d.document)), mode };
}

const emptyTrust = () => ({ bundle, revocations: RevocationIndex.empty(TRUST_DOMAIN) });

/** What one enforcer answered for one packet, and whether the warm table (not JS) decided it. */
interface Given {
  readonly verdict: VerdictCode;
  readonly mark: number | undefined;
  readonly packet: Buffer | undefined;
  readonly native: boolean;
}

class Side {
  readonly flows: FlowRecord[] = [];
  /** This side's clock is the lab's plus this many ms. */
  skew = 0;
  readonly enforcer: FastPathEnforcer;

  constructor(clock: { ms: number }, local: LocalIdentity, policy: string, mode: EnforcementMode) {
    this.enforcer = new FastPathEnforcer(
      SETTINGS,
      { local, trust: emptyTrust(), policy: policyState(policy, mode) },
      (f) => this.flows.push(f),
      () => clock.ms + this.skew,
    );
  }

  handled(kind: PacketKind): number {
    return this.enforcer.stats().counters.warm[kind].handled;
  }

  private handledTotal(): number {
    const warm = this.enforcer.stats().counters.warm;
    return KINDS.reduce((n, k) => n + warm[k].handled, 0);
  }

  hand(hook: number, packet: Buffer): Given {
    const before = this.handledTotal();
    let answer: Omit<Given, "native"> | null = null;
    const queue = {
      verdict: (_id: number, verdict: VerdictCode, mark?: number, out?: Buffer): void => {
        if (answer) throw new Error("two verdicts for one packet");
        answer = { verdict, mark, packet: out };
      },
    };
    const family = (packet[0] as number) >> 4 === 6 ? 6 : 4;
    this.enforcer.handleDirect(queue, { id: 1, hook, family, mark: 0, packet });
    if (!answer) throw new Error("no verdict");
    return { ...(answer as Omit<Given, "native">), native: this.handledTotal() > before };
  }

  rejections(): Record<string, number> {
    return { ...this.enforcer.stats().counters.rejections };
  }
}

/** The client's address and the server's port of a handshake, when not the usual ones. */
interface Endpoints {
  readonly client?: number[];
  readonly port?: number;
}

/** Both ends over IPv4, or both over IPv6. */
interface Family {
  readonly build: typeof segment;
  readonly client: number[];
  readonly server: number[];
}
const IPV4: Family = { build: segment, client: CLIENT, server: SERVER };
const IPV6: Family = { build: segment6, client: CLIENT6, server: SERVER6 };

class Lab {
  readonly clock = { ms: Date.now() };
  readonly client: Side;
  readonly server: Side;
  private readonly family: Family;

  constructor(
    opts: {
      client?: LocalIdentity;
      server?: LocalIdentity;
      policy?: string;
      clientPolicy?: string;
      mode?: EnforcementMode;
      family?: Family;
    } = {},
  ) {
    this.family = opts.family ?? IPV4;
    const mode = opts.mode ?? "enforce";
    this.client = new Side(this.clock, opts.client ?? web, opts.clientPolicy ?? ALLOW_POLICY, mode);
    this.server = new Side(this.clock, opts.server ?? db, opts.policy ?? ALLOW_POLICY, mode);
  }

  clientSyn(sport: number, to: Endpoints = {}): Given {
    const { build, client: from, server } = this.family;
    const { client = from, port = PORT } = to;
    return this.client.hand(HOOK_OUT, build(client, server, sport, port, TCP_FLAGS.SYN));
  }

  serverSynAck(sport: number, to: Endpoints = {}): Given {
    const { build, client: from, server } = this.family;
    const { client = from, port = PORT } = to;
    return this.server.hand(HOOK_OUT, build(server, client, port, sport, TCP_FLAGS.SYN | TCP_FLAGS.ACK));
  }

  /** One handshake on client port `sport`, as far as it gets (a refused SYN gets no SYN-ACK). */
  handshake(
    sport: number,
    to: Endpoints = {},
  ): { syn: Given; synIn: Given; synAck?: Given; synAckIn?: Given } {
    const syn = this.clientSyn(sport, to);
    const synIn = this.server.hand(HOOK_IN, sent(syn));
    if (markOf(synIn) !== MARK_PENDING_IN) return { syn, synIn };
    const synAck = this.serverSynAck(sport, to);
    const synAckIn = this.client.hand(HOOK_IN, sent(synAck));
    return { syn, synIn, synAck, synAckIn };
  }

  /** A handshake both sides accept; fails the test otherwise. */
  accepted(sport: number, to: Endpoints = {}): ReturnType<Lab["handshake"]> {
    const h = this.handshake(sport, to);
    expect(markOf(h.synIn), "server accepts the SYN").toBe(MARK_PENDING_IN);
    expect(h.synAck?.verdict).toBe(VERDICT.ACCEPT);
    expect(markOf(h.synAckIn as Given), "client accepts the SYN-ACK").toBe(MARK_ACCEPTED);
    return h;
  }

  /** Flow records reported since the last call (they go out on the next turn of the event loop). */
  async flows(): Promise<{ client: FlowRecord[]; server: FlowRecord[] }> {
    await new Promise((resolve) => setImmediate(resolve));
    return { client: this.client.flows.splice(0), server: this.server.flows.splice(0) };
  }
}

function markOf(g: Given): number | undefined {
  return g.mark === undefined ? undefined : g.mark & MARK_MASK;
}

/** The rewritten packet an accepted verdict lets through (every handshake verdict here rewrites one). */
function sent(g: Given): Buffer {
  expect(g.verdict).toBe(VERDICT.ACCEPT);
  if (!g.packet) throw new Error("the verdict carries no packet");
  return g.packet;
}

/** For SYN out, SYN in, SYN-ACK out, SYN-ACK in: whether the warm table decided it. */
function nativeFlags(h: ReturnType<Lab["handshake"]>): boolean[] {
  return [h.syn, h.synIn, h.synAck, h.synAckIn].map((g) => g?.native ?? false);
}

/** The same packet with the TCP source port changed (the token is left exactly as it was). */
function withSourcePort(packet: Buffer, port: number): Buffer {
  const out = Buffer.from(packet);
  out.writeUInt16BE(port, ((out[0] as number) & 0x0f) * 4);
  return out;
}

/** The same packet with the last byte (the token proof's last byte) flipped. */
function withLastByteFlipped(packet: Buffer): Buffer {
  const out = Buffer.from(packet);
  out[out.length - 1] = (out[out.length - 1] as number) ^ 0x01;
  return out;
}

describe("warm handshakes in native code", () => {
  it("decides the first handshake in JS and later ones natively, with flow records naming the peer and the decision", async () => {
    const lab = new Lab();
    const first = lab.accepted(40_001);
    expect(nativeFlags(first)).toEqual([false, false, false, false]);
    const cold = await lab.flows();
    expect(cold.server).toHaveLength(1);
    expect(cold.client).toHaveLength(1);

    const second = lab.accepted(40_002);
    expect(nativeFlags(second)).toEqual([true, true, true, true]);
    expect(markOf(second.syn)).toBe(MARK_PENDING_OUT);
    // The token is stripped before the segment reaches either socket.
    expect(parseTcp(sent(second.synIn), EXID)).toMatchObject({ hasToken: false, payloadLength: 0 });
    expect(parseTcp(sent(second.synAckIn as Given), EXID)).toMatchObject({
      hasToken: false,
      payloadLength: 0,
    });
    for (const kind of KINDS) {
      const side = kind === "ourSyn" || kind === "peerSynAck" ? lab.client : lab.server;
      expect(side.handled(kind), kind).toBe(1);
    }

    const warm = await lab.flows();
    expect(warm.server).toHaveLength(1);
    expect(warm.client).toHaveLength(1);
    const ingress = warm.server[0] as FlowRecord;
    const egress = warm.client[0] as FlowRecord;
    expect(ingress).toMatchObject({
      direction: "ingress",
      reporter: { spiffeId: db.identity.spiffeId, kind: "fastpath" },
      source: { spiffeId: web.identity.spiffeId, labels: web.identity.labels, address: CLIENT_ADDRESS },
      destination: { spiffeId: db.identity.spiffeId, address: SERVER_ADDRESS },
      port: PORT,
      verdict: "allow",
      wouldDeny: false,
      policy: (cold.server[0] as FlowRecord).policy,
      reason: (cold.server[0] as FlowRecord).reason,
      time: lab.clock.ms,
    });
    expect(ingress.policy).toMatch(/db-ingress/);
    expect(web.identity.labels).toMatchObject({ app: "web" });
    expect(egress).toMatchObject({
      direction: "egress",
      reporter: { spiffeId: web.identity.spiffeId, kind: "fastpath" },
      source: { spiffeId: web.identity.spiffeId, address: CLIENT_ADDRESS },
      destination: { spiffeId: db.identity.spiffeId, labels: db.identity.labels, address: SERVER_ADDRESS },
      port: PORT,
      verdict: "allow",
      policy: (cold.client[0] as FlowRecord).policy,
      reason: (cold.client[0] as FlowRecord).reason,
    });
    expect(lab.server.enforcer.stats().counters.macProofs).toBe(1);
    expect(lab.client.enforcer.stats().counters.macProofs).toBe(1);
  });

  it("over IPv6 too: tokens the warm table builds verify in JS on the other side, and the flow records carry IPv6 addresses", async () => {
    const lab = new Lab({ family: IPV6 });
    lab.accepted(40_051);
    expect(nativeFlags(lab.accepted(40_052))).toEqual([true, true, true, true]);
    // New policy on both sides: each verifies the other's natively built MAC token in JS.
    lab.server.enforcer.setPolicy(policyState(ALLOW_POLICY));
    lab.client.enforcer.setPolicy(policyState(ALLOW_POLICY));
    expect(nativeFlags(lab.accepted(40_053))).toEqual([true, false, true, false]);
    expect(lab.server.rejections()).toEqual({});
    expect(lab.client.rejections()).toEqual({});
    expect(nativeFlags(lab.accepted(40_054))).toEqual([true, true, true, true]);
    const { server } = await lab.flows();
    expect(server.map((f) => [f.source.address, f.destination.address])).toContainEqual([
      "2001:2::1",
      "2001:2::2",
    ]);
    expect(new Set(server.map((f) => f.source.address))).toEqual(new Set(["2001:2::1"]));
  });

  it("keeps the native decisions per client port: flow records carry each connection's 4-tuple", async () => {
    const lab = new Lab();
    lab.accepted(40_101);
    await lab.flows();
    lab.accepted(40_102);
    lab.accepted(40_103);
    const { server, client } = await lab.flows();
    expect(server.map((f) => [f.source.address, f.destination.address, f.port])).toEqual([
      [CLIENT_ADDRESS, SERVER_ADDRESS, PORT],
      [CLIENT_ADDRESS, SERVER_ADDRESS, PORT],
    ]);
    expect(client).toHaveLength(2);
    expect(lab.server.handled("peerSyn")).toBe(2);
  });
});

describe("warm tokens that must not pass", () => {
  it("refuses a warm SYN replayed verbatim as replayed", async () => {
    const lab = new Lab();
    lab.accepted(40_201);
    const syn = lab.clientSyn(40_202);
    expect(syn.native).toBe(true);
    const first = lab.server.hand(HOOK_IN, sent(syn));
    expect(first.native).toBe(true);
    expect(markOf(first)).toBe(MARK_PENDING_IN);
    await lab.flows();

    const replay = lab.server.hand(HOOK_IN, sent(syn));
    expect(replay.native).toBe(false);
    expect(markOf(replay)).toBe(MARK_DENY);
    expect(lab.server.rejections()).toMatchObject({ replayed: 1 });
    const { server } = await lab.flows();
    expect(server).toHaveLength(1);
    expect(server[0]).toMatchObject({ verdict: "deny", reason: expect.stringMatching(/replayed/) });
  });

  it("remembers a nonce for as long as its token passes the window, both edges included", () => {
    const lab = new Lab();
    lab.accepted(40_251);
    // Accepted at the earliest moment the window allows (the token stamped a full window ahead) ...
    lab.client.skew = WINDOW_MS;
    const syn = lab.clientSyn(40_252);
    const first = lab.server.hand(HOOK_IN, sent(syn));
    expect([first.native, markOf(first)]).toEqual([true, MARK_PENDING_IN]);
    // ... and replayed at the last moment it still passes it (stamped a full window ago).
    lab.clock.ms += 2 * WINDOW_MS;
    const replay = lab.server.hand(HOOK_IN, sent(syn));
    expect([replay.native, markOf(replay)]).toEqual([false, MARK_DENY]);
    expect(lab.server.rejections()).toMatchObject({ replayed: 1 });
  });

  it("refuses a warm SYN's token moved onto another client port (bad-signature), and its nonce stays unspent", async () => {
    const lab = new Lab();
    lab.accepted(40_301);
    const syn = lab.clientSyn(40_302);
    const moved = lab.server.hand(HOOK_IN, withSourcePort(sent(syn), 40_399));
    expect(moved.native).toBe(false);
    expect(markOf(moved)).toBe(MARK_DENY);
    expect(lab.server.rejections()).toMatchObject({ "bad-signature": 1 });
    // The genuine SYN still passes, natively: a refused token does not burn its nonce.
    const genuine = lab.server.hand(HOOK_IN, sent(syn));
    expect(genuine.native).toBe(true);
    expect(markOf(genuine)).toBe(MARK_PENDING_IN);
  });

  it("refuses a warm SYN whose MAC has one byte flipped", () => {
    const lab = new Lab();
    lab.accepted(40_401);
    const syn = lab.clientSyn(40_402);
    const flipped = lab.server.hand(HOOK_IN, withLastByteFlipped(sent(syn)));
    expect(flipped.native).toBe(false);
    expect(markOf(flipped)).toBe(MARK_DENY);
    expect(lab.server.rejections()).toMatchObject({ "bad-signature": 1 });
  });

  it("refuses a warm SYN-ACK with a flipped MAC byte on the client", () => {
    const lab = new Lab();
    lab.accepted(40_451);
    const syn = lab.clientSyn(40_452);
    expect(markOf(lab.server.hand(HOOK_IN, sent(syn)))).toBe(MARK_PENDING_IN);
    const synAck = lab.serverSynAck(40_452);
    expect(synAck.native).toBe(true);
    const refused = lab.client.hand(HOOK_IN, withLastByteFlipped(sent(synAck)));
    expect(refused.native).toBe(false);
    expect(markOf(refused)).toBe(MARK_REFUSED);
    expect(parseTcp(sent(refused), EXID).flags & TCP_FLAGS.RST).toBe(TCP_FLAGS.RST);
    expect(lab.client.rejections()).toMatchObject({ "bad-signature": 1 });
  });

  it("refuses on the client a correctly MACed SYN-ACK whose echoed nonce is not one it sent", () => {
    const lab = new Lab();
    lab.accepted(40_501);
    const sport = 40_502;
    const syn = lab.clientSyn(sport);
    expect(syn.native).toBe(true);
    // The server's real key material: everything about this token is right but the echo.
    const webDigest = chainDigest(web.chain);
    const dbDigest = chainDigest(db.chain);
    const key = derivePairKey(db.privateKey, createPublicKey(web.privateKey), dbDigest, webDigest);
    const token = encodeToken(db, {
      type: "syn-ack",
      nonce: newNonce(),
      echoNonce: newNonce(),
      timestampMs: lab.clock.ms,
      tuple: {
        clientAddress: CLIENT_ADDRESS,
        clientPort: sport,
        serverAddress: SERVER_ADDRESS,
        serverPort: PORT,
      },
      mac: { key, keyId: Buffer.from(webDigest, "hex") },
    });
    const forged = insertToken(
      segment(SERVER, CLIENT, PORT, sport, TCP_FLAGS.SYN | TCP_FLAGS.ACK),
      token,
      EXID,
    );
    const refused = lab.client.hand(HOOK_IN, forged);
    expect(refused.native).toBe(false);
    expect(markOf(refused)).toBe(MARK_REFUSED);
    expect(lab.client.rejections()).toMatchObject({ "nonce-mismatch": 1 });
  });

  it("refuses a replayed warm SYN-ACK", async () => {
    const lab = new Lab();
    lab.accepted(40_601);
    const h = lab.accepted(40_602);
    expect(nativeFlags(h)).toEqual([true, true, true, true]);
    await lab.flows();
    const replay = lab.client.hand(HOOK_IN, sent(h.synAck as Given));
    expect(replay.native).toBe(false);
    expect(markOf(replay)).toBe(MARK_REFUSED);
    expect(parseTcp(sent(replay), EXID).flags & TCP_FLAGS.RST).toBe(TCP_FLAGS.RST);
    const { client } = await lab.flows();
    expect(client).toHaveLength(1);
    expect(client[0]).toMatchObject({ verdict: "deny", direction: "egress" });
  });

  it("refuses a warm SYN-ACK replayed into a new connection on the same 4-tuple", () => {
    const lab = new Lab();
    lab.accepted(40_651);
    const h = lab.accepted(40_652);
    // The same client port again: a new connection whose SYN carries a new nonce.
    const again = lab.clientSyn(40_652);
    expect(again.native).toBe(true);
    const replay = lab.client.hand(HOOK_IN, sent(h.synAck as Given));
    expect(replay.native).toBe(false);
    expect(markOf(replay)).toBe(MARK_REFUSED);
    expect(lab.client.rejections()).toMatchObject({ "nonce-mismatch": 1 });
  });
});

describe("what JS changes reaches the warm table at once", () => {
  it("a policy change allow -> deny applies to the very next warm SYN, then denies natively; deny -> allow likewise", async () => {
    const lab = new Lab();
    lab.accepted(41_001);
    lab.accepted(41_002);
    await lab.flows();

    lab.server.enforcer.setPolicy(policyState(DENY_POLICY));
    const firstDeny = lab.handshake(41_003);
    expect(firstDeny.syn.native).toBe(true);
    expect(firstDeny.synIn.native).toBe(false);
    expect(markOf(firstDeny.synIn)).toBe(MARK_DENY);
    const jsDeny = (await lab.flows()).server;
    expect(jsDeny).toHaveLength(1);
    expect(jsDeny[0]).toMatchObject({ verdict: "deny", policy: expect.stringMatching(/db-ingress/) });

    const nativeDeny = lab.handshake(41_004);
    expect(nativeDeny.synIn.native).toBe(true);
    expect(markOf(nativeDeny.synIn)).toBe(MARK_DENY);
    // Stripped, so the RST the rules send acknowledges exactly the SYN.
    expect(parseTcp(sent(nativeDeny.synIn), EXID)).toMatchObject({ hasToken: false, payloadLength: 0 });
    const nativeDenyFlows = (await lab.flows()).server;
    expect(nativeDenyFlows).toHaveLength(1);
    expect(nativeDenyFlows[0]).toMatchObject({
      verdict: "deny",
      policy: (jsDeny[0] as FlowRecord).policy,
      reason: (jsDeny[0] as FlowRecord).reason,
      source: { spiffeId: web.identity.spiffeId },
    });
    expect(lab.server.enforcer.stats().counters.rejections.policy).toBe(2);

    lab.server.enforcer.setPolicy(policyState(ALLOW_POLICY));
    const firstAllow = lab.handshake(41_005);
    expect(firstAllow.synIn.native).toBe(false);
    expect(markOf(firstAllow.synIn)).toBe(MARK_PENDING_IN);
    const nativeAllow = lab.accepted(41_006);
    expect(nativeFlags(nativeAllow)).toEqual([true, true, true, true]);
    const allowFlows = (await lab.flows()).server;
    expect(allowFlows.map((f) => f.verdict)).toEqual(["allow", "allow"]);
  });

  it("an egress policy change on the client refuses the next warm SYN-ACK, then refuses natively", async () => {
    const lab = new Lab();
    lab.accepted(41_101);
    lab.accepted(41_102);
    await lab.flows();

    lab.client.enforcer.setPolicy(policyState(WEB_EGRESS_DENY));
    const jsRefusal = lab.handshake(41_103);
    expect(jsRefusal.synAckIn?.native).toBe(false);
    expect(markOf(jsRefusal.synAckIn as Given)).toBe(MARK_REFUSED);
    const nativeRefusal = lab.handshake(41_104);
    expect(nativeRefusal.synAckIn?.native).toBe(true);
    expect(markOf(nativeRefusal.synAckIn as Given)).toBe(MARK_REFUSED);
    expect(parseTcp(sent(nativeRefusal.synAckIn as Given), EXID).flags & TCP_FLAGS.RST).toBe(TCP_FLAGS.RST);
    const { client } = await lab.flows();
    expect(client.map((f) => [f.direction, f.verdict, f.policy])).toEqual([
      ["egress", "deny", client[0]?.policy],
      ["egress", "deny", client[0]?.policy],
    ]);
    expect(client[0]?.policy).toMatch(/web-egress/);
  });

  it("a new revocation list refuses the next warm SYN of the revoked client as revoked", async () => {
    const lab = new Lab();
    lab.accepted(41_201);
    lab.accepted(41_202);
    await lab.flows();
    lab.server.enforcer.setTrust({
      bundle,
      revocations: new RevocationIndex({
        trustDomain: TRUST_DOMAIN,
        sequence: 1,
        entries: [
          {
            spiffeId: web.identity.spiffeId,
            revokedAtMs: lab.clock.ms,
            expiresAtMs: lab.clock.ms + 3_600_000,
            reason: "key compromised",
          },
        ],
      }),
    });
    for (const sport of [41_203, 41_204]) {
      const h = lab.handshake(sport);
      expect(h.syn.native).toBe(true);
      expect(h.synIn.native).toBe(false);
      expect(markOf(h.synIn)).toBe(MARK_DENY);
    }
    expect(lab.server.rejections()).toMatchObject({ revoked: 2 });
    const { server } = await lab.flows();
    expect(server.map((f) => f.verdict)).toEqual(["deny", "deny"]);
    expect(server[0]?.reason).toMatch(/revoked/);
  });

  it("a peer certificate past its notAfter is not accepted natively: JS refuses it as expired", async () => {
    const shortLived = await identity("web-short", { app: "web" }, 120);
    const lab = new Lab({ client: shortLived });
    lab.accepted(41_301);
    expect(nativeFlags(lab.accepted(41_302))).toEqual([true, true, true, true]);
    lab.clock.ms = shortLived.identity.notAfter.getTime() + 1;
    const h = lab.handshake(41_303);
    expect(h.syn.native).toBe(true);
    expect(h.synIn.native).toBe(false);
    expect(markOf(h.synIn)).toBe(MARK_DENY);
    expect(lab.server.rejections()).toMatchObject({ expired: 1 });
    await lab.flows();
  });

  it("a token timestamp outside the window is refused both ways; at the window's edge it still passes natively", () => {
    const lab = new Lab();
    lab.accepted(41_401);
    lab.accepted(41_402);

    lab.client.skew = WINDOW_MS;
    expect(nativeFlags(lab.accepted(41_403))).toEqual([true, true, true, true]);
    lab.client.skew = -WINDOW_MS;
    expect(nativeFlags(lab.accepted(41_404))).toEqual([true, true, true, true]);

    lab.client.skew = WINDOW_MS + 1;
    const ahead = lab.handshake(41_405);
    expect([ahead.syn.native, ahead.synIn.native]).toEqual([true, false]);
    expect(markOf(ahead.synIn)).toBe(MARK_DENY);
    lab.client.skew = -(WINDOW_MS + 1);
    const behind = lab.handshake(41_406);
    expect([behind.syn.native, behind.synIn.native]).toEqual([true, false]);
    expect(markOf(behind.synIn)).toBe(MARK_DENY);
    expect(lab.server.rejections()).toMatchObject({ "from-future": 1, expired: 1 });

    // The other way: the server's SYN-ACK token judged by the client's clock.
    lab.client.skew = 0;
    for (const [sport, skew] of [
      [41_407, WINDOW_MS + 1],
      [41_408, -(WINDOW_MS + 1)],
    ] as const) {
      const syn = lab.clientSyn(sport);
      expect(markOf(lab.server.hand(HOOK_IN, sent(syn)))).toBe(MARK_PENDING_IN);
      lab.server.skew = skew;
      const synAck = lab.serverSynAck(sport);
      lab.server.skew = 0;
      expect(synAck.native).toBe(true);
      const refused = lab.client.hand(HOOK_IN, sent(synAck));
      expect(refused.native).toBe(false);
      expect(markOf(refused)).toBe(MARK_REFUSED);
    }
    expect(lab.client.rejections()).toMatchObject({ "from-future": 1, expired: 1 });
  });

  it("server rotation: the client's MAC against the old certificate still works (JS), then warm again", async () => {
    const lab = new Lab();
    lab.accepted(41_501);
    lab.accepted(41_502);
    lab.server.enforcer.setIdentity(rotatedDb);

    const across = lab.accepted(41_503);
    // The client still proves itself to the old certificate; the server answers with a signature
    // under the new one, which the client learns.
    expect(nativeFlags(across)).toEqual([true, false, false, false]);
    const answer = decodeToken((extractToken(sent(across.synAck as Given), EXID) as { token: Buffer }).token);
    expect([answer.proofKind, answer.chain]).toEqual(["signature", rotatedDb.chain]);
    expect(nativeFlags(lab.accepted(41_504))).toEqual([true, true, true, true]);
    const { client } = await lab.flows();
    expect(client.map((f) => f.verdict)).toEqual(["allow", "allow", "allow", "allow"]);
    expect(lab.client.enforcer.stats().counters.macProofs).toBe(2);
  });

  it("server rotation after its old certificate expired: the warm SYN is dropped, the retransmission (signed, JS) works, then warm again", async () => {
    const shortDb = await identity("db", { app: "db" }, 120);
    const lab = new Lab({ server: shortDb });
    lab.accepted(41_601);
    lab.accepted(41_602);
    lab.clock.ms = shortDb.identity.notAfter.getTime() + 1;
    lab.server.enforcer.setIdentity(await identity("db", { app: "db" }));

    const sport = 41_603;
    const syn = lab.clientSyn(sport);
    expect(syn.native).toBe(true);
    const dropped = lab.server.hand(HOOK_IN, sent(syn));
    expect(dropped.verdict).toBe(VERDICT.DROP);
    expect(lab.server.rejections()).toMatchObject({ "unknown-key": 1 });

    const retransmission = lab.clientSyn(sport);
    expect(retransmission.native).toBe(false);
    const h = {
      syn: retransmission,
      synIn: lab.server.hand(HOOK_IN, sent(retransmission)),
    };
    expect(markOf(h.synIn)).toBe(MARK_PENDING_IN);
    const synAck = lab.serverSynAck(sport);
    expect(markOf(lab.client.hand(HOOK_IN, sent(synAck)))).toBe(MARK_ACCEPTED);

    lab.accepted(41_604);
    expect(nativeFlags(lab.accepted(41_605))).toEqual([true, true, true, true]);
    await lab.flows();
  });
  it("server rotation between a warm SYN and its SYN-ACK: the handshake in progress still completes", () => {
    const lab = new Lab();
    lab.accepted(41_701);
    const sport = 41_702;
    const synIn = lab.server.hand(HOOK_IN, sent(lab.clientSyn(sport)));
    expect([synIn.native, markOf(synIn)]).toEqual([true, MARK_PENDING_IN]);
    lab.server.enforcer.setIdentity(rotatedDb);
    // Our pair key with the client was derived against the old certificate: answer with a signature.
    const synAck = lab.serverSynAck(sport);
    const answer = decodeToken((extractToken(sent(synAck), EXID) as { token: Buffer }).token);
    expect([synAck.native, answer.proofKind, answer.chain]).toEqual([false, "signature", rotatedDb.chain]);
    const synAckIn = lab.client.hand(HOOK_IN, sent(synAck));
    expect(markOf(synAckIn)).toBe(MARK_ACCEPTED);
    expect(lab.client.rejections()).toEqual({});
  });

  it("client rotation: its next SYN, by MAC under its new certificate, is verified by JS, then warm again", () => {
    const lab = new Lab();
    lab.accepted(41_801);
    lab.accepted(41_802);
    lab.client.enforcer.setIdentity(rotatedWeb);
    const across = lab.accepted(41_803);
    const token = decodeToken((extractToken(sent(across.syn), EXID) as { token: Buffer }).token);
    expect([token.proofKind, token.chain]).toEqual(["mac", rotatedWeb.chain]);
    expect(nativeFlags(across)).toEqual([false, false, true, false]);
    expect(nativeFlags(lab.accepted(41_804))).toEqual([true, true, true, true]);
  });
});

describe("observe mode", () => {
  it("reports would-deny for the natively decided handshakes that policy would deny", async () => {
    const lab = new Lab({ policy: DENY_POLICY, mode: "observe" });
    lab.accepted(42_001);
    const js = (await lab.flows()).server;
    expect(js[0]).toMatchObject({ verdict: "allow", wouldDeny: true });
    const h = lab.accepted(42_002);
    expect(nativeFlags(h)).toEqual([true, true, true, true]);
    const native = (await lab.flows()).server;
    expect(native).toHaveLength(1);
    expect(native[0]).toMatchObject({
      verdict: "allow",
      wouldDeny: true,
      policy: (js[0] as FlowRecord).policy,
      reason: (js[0] as FlowRecord).reason,
    });
  });
});

describe("the warm table leaves to JS", () => {
  it("a known peer from another address, or to another port, until JS has decided that pair", async () => {
    const lab = new Lab();
    lab.accepted(43_001);
    const elsewhere = { client: [198, 18, 0, 3] };
    const fromElsewhere = lab.accepted(43_002, elsewhere);
    expect(fromElsewhere.synIn.native).toBe(false);
    expect(nativeFlags(lab.accepted(43_003, elsewhere))).toEqual([true, true, true, true]);

    // Another port of the same server, learned from a sibling worker: the client proves itself by MAC there too.
    lab.client.enforcer.learnServer({
      address: SERVER_ADDRESS,
      port: PORT + 1,
      digest: chainDigest(db.chain),
      publicKeyDer: createPublicKey(db.privateKey).export({ type: "spki", format: "der" }),
    });
    const otherPort = { port: PORT + 1 };
    const first = lab.handshake(43_004, otherPort);
    expect([first.syn.native, first.synIn.native, markOf(first.synIn)]).toEqual([true, false, MARK_DENY]);
    const again = lab.handshake(43_005, otherPort);
    expect([again.synIn.native, markOf(again.synIn)]).toEqual([true, MARK_DENY]);
    const { server } = await lab.flows();
    // Records of the warm table's decisions are reported ahead of JS's: compare them as a set.
    const seen = server.map((f) => `${f.source.address} ${f.port} ${f.verdict}`).sort();
    expect(seen).toEqual(
      [
        `${CLIENT_ADDRESS} ${PORT + 1} deny`,
        `${CLIENT_ADDRESS} ${PORT + 1} deny`,
        `${CLIENT_ADDRESS} ${PORT} allow`,
        `198.18.0.3 ${PORT} allow`,
        `198.18.0.3 ${PORT} allow`,
      ].sort(),
    );
  });

  it("a SYN-ACK from a server the client's new revocation list names", () => {
    const lab = new Lab();
    lab.accepted(43_101);
    lab.accepted(43_102);
    lab.client.enforcer.setTrust({
      bundle,
      revocations: new RevocationIndex({
        trustDomain: TRUST_DOMAIN,
        sequence: 1,
        entries: [
          {
            spiffeId: db.identity.spiffeId,
            revokedAtMs: lab.clock.ms,
            expiresAtMs: lab.clock.ms + 3_600_000,
            reason: "decommissioned",
          },
        ],
      }),
    });
    const h = lab.handshake(43_103);
    expect(h.synAckIn?.native).toBe(false);
    expect(markOf(h.synAckIn as Given)).toBe(MARK_REFUSED);
    expect(lab.client.rejections()).toMatchObject({ revoked: 1 });
  });

  it("a SYN retransmission (signed by JS); either SYN's answer then completes the handshake", () => {
    for (const answered of ["first", "retransmission"] as const) {
      const lab = new Lab();
      lab.accepted(43_201);
      const sport = 43_202;
      const first = lab.clientSyn(sport);
      expect(first.native).toBe(true);
      const retransmission = lab.clientSyn(sport);
      expect(retransmission.native).toBe(false);
      expect(
        decodeToken((extractToken(sent(retransmission), EXID) as { token: Buffer }).token).proofKind,
      ).toBe("signature");
      const synIn = lab.server.hand(HOOK_IN, sent(answered === "first" ? first : retransmission));
      expect(markOf(synIn)).toBe(MARK_PENDING_IN);
      const synAckIn = lab.client.hand(HOOK_IN, sent(lab.serverSynAck(sport)));
      expect(markOf(synAckIn), answered).toBe(MARK_ACCEPTED);
    }
  });

  it("a chain verified as a server's is verified again before it counts as a client's", () => {
    const lab = new Lab();
    lab.accepted(40_700);
    const web = lab.client.enforcer;
    const cold = web.stats().counters.coldVerifications;
    // db, the server web verified in that SYN-ACK, now connects to web as a client.
    const syn = lab.server.hand(HOOK_OUT, segment(SERVER, CLIENT, 40_701, PORT, TCP_FLAGS.SYN));
    const synIn = lab.client.hand(HOOK_IN, sent(syn));
    expect(synIn.native).toBe(false);
    expect(web.stats().counters.coldVerifications).toBe(cold + 1);
  });

  it("a nonce JS accepted is a replay to the warm table too", () => {
    const lab = new Lab();
    lab.accepted(43_301);
    lab.accepted(43_302);
    // New policy: the next warm SYN is verified and decided by JS, which teaches the decision.
    lab.server.enforcer.setPolicy(policyState(ALLOW_POLICY));
    const syn = lab.clientSyn(43_303);
    const byJs = lab.server.hand(HOOK_IN, sent(syn));
    expect([byJs.native, markOf(byJs)]).toEqual([false, MARK_PENDING_IN]);
    expect(lab.server.enforcer.stats().counters.macProofs).toBe(2);
    const replay = lab.server.hand(HOOK_IN, sent(syn));
    expect([replay.native, markOf(replay)]).toEqual([false, MARK_DENY]);
    expect(lab.server.rejections()).toMatchObject({ replayed: 1 });
  });

  it("every single-bit change of a warm SYN's token (and JS refuses each)", () => {
    const lab = new Lab();
    lab.accepted(43_401);
    const syn = sent(lab.clientSyn(43_402));
    const { token } = extractToken(syn, EXID) as { token: Buffer };
    const tokenAt = syn.length - token.length;
    for (let i = tokenAt; i < syn.length; i++) {
      const mutated = Buffer.from(syn);
      mutated[i] = (mutated[i] as number) ^ (1 << (i % 8));
      const g = lab.server.hand(HOOK_IN, mutated);
      expect(g.native, `token byte ${i - tokenAt}`).toBe(false);
      // Refused: reset, or dropped when the key id names no key of ours (the client's retransmission comes signed).
      const refused = markOf(g) === MARK_DENY || (g.verdict === VERDICT.DROP && g.mark === undefined);
      expect(refused, `token byte ${i - tokenAt}`).toBe(true);
    }
    const genuine = lab.server.hand(HOOK_IN, syn);
    expect([genuine.native, markOf(genuine)]).toEqual([true, MARK_PENDING_IN]);
  });

  it("every single-bit change of a warm SYN-ACK's token (and JS refuses each)", () => {
    const lab = new Lab();
    lab.accepted(43_501);
    let tokenLength = 0;
    for (let i = 0; tokenLength === 0 || i < tokenLength; i++) {
      const sport = 44_000 + i;
      expect(markOf(lab.server.hand(HOOK_IN, sent(lab.clientSyn(sport))))).toBe(MARK_PENDING_IN);
      const synAck = sent(lab.serverSynAck(sport));
      tokenLength = (extractToken(synAck, EXID) as { token: Buffer }).token.length;
      const at = synAck.length - tokenLength + i;
      const mutated = Buffer.from(synAck);
      mutated[at] = (mutated[at] as number) ^ (1 << (i % 8));
      const g = lab.client.hand(HOOK_IN, mutated);
      expect([g.native, markOf(g)], `token byte ${i}`).toEqual([false, MARK_REFUSED]);
    }
    expect(nativeFlags(lab.accepted(43_502))).toEqual([true, true, true, true]);
  });
});
