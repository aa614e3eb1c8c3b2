/**
 * The lab of the fast path's warm-handshake suites (`test/unit/fastpath-warm-*.test.ts`): two real
 * enforcers (client app=web, server app=db) with identities from a real CA, given real SYN and
 * SYN-ACK bytes directly, warm table first and then JS, as a queue does, on a clock the test moves.
 * `Given` says which side of the split decided a packet (the warm table's counters) and what it
 * decided (verdict, mark, rewritten packet).
 */
import { readFile } from "node:fs/promises";
import { afterAll, beforeAll, expect } from "vitest";
import type { FlowRecord } from "../../core/flow.ts";
import { compilePolicySet, parsePolicyDocuments } from "../../core/policy/index.ts";
import type { EnforcementMode } from "../../core/policy/index.ts";
import { parseBundle } from "../../core/svid/bundle.ts";
import type { TrustBundle } from "../../core/svid/bundle.ts";
import { RevocationIndex } from "../../core/svid/revocation.ts";
import { TCP_FLAGS, VERDICT } from "../../native/index.ts";
import type { VerdictCode } from "../../native/index.ts";
import { FastPathEnforcer } from "../../sidecar/fastpath/enforcer.ts";
import type { LocalIdentity, PacketKind } from "../../sidecar/fastpath/enforcer.ts";
import { loadLocalIdentity } from "../../sidecar/fastpath/local-identity.ts";
import { MARK_ACCEPTED, MARK_MASK, MARK_PENDING_IN } from "../../sidecar/fastpath/marks.ts";
import { webToDbPolicy } from "../e2e/fastpath-support/lab.ts";
import { TestPki, TRUST_DOMAIN } from "../e2e/fastpath-support/pki.ts";
import { segment, segment6 } from "../e2e/fastpath-support/segments.ts";

export const EXID = 0x5347;
export const WINDOW_MS = 10_000;
export const SETTINGS = {
  queueFirst: 0,
  queueCount: 1,
  exid: EXID,
  windowMs: WINDOW_MS,
  maxTokenBytes: 1400,
};
export const HOOK_IN = 0;
export const HOOK_OUT = 3;
export const CLIENT = [198, 18, 0, 1];
export const SERVER = [198, 18, 0, 2];
export const CLIENT_ADDRESS = "198.18.0.1";
export const SERVER_ADDRESS = "198.18.0.2";
export const PORT = 5432;
const v6 = (last: number): number[] => [0x20, 0x01, 0, 0x02, ...new Array<number>(11).fill(0), last];
export const CLIENT6 = v6(1);
export const SERVER6 = v6(2);
export const KINDS: readonly PacketKind[] = ["ourSyn", "peerSyn", "ourSynAck", "peerSynAck"];

export const ALLOW_POLICY = webToDbPolicy([PORT]);
export const DENY_POLICY = webToDbPolicy(
  [PORT],
  [`{ action: deny, from: [ { matchLabels: { app: web } } ], ports: [ ${PORT} ] }`],
);
/** The same, and web's own egress rule denies it db on the port. */
export const WEB_EGRESS_DENY = `${ALLOW_POLICY}---
apiVersion: sigil.dev/v1
kind: AuthorizationPolicy
metadata: { name: web-egress }
spec:
  selector: { matchLabels: { app: web } }
  egress:
    - { action: deny, to: [ { matchLabels: { app: db } } ], ports: [ ${PORT} ] }
`;

/**
 * The lab's identities, from one test CA per suite: set by the hooks `useWarmIdentities` registers,
 * read by the suite's cases through these live bindings once they are.
 */
export let pki: TestPki;
export let bundle: TrustBundle;
export let web: LocalIdentity;
export let db: LocalIdentity;
/** Second SVIDs for the same workloads, as a rotation brings them. */
export let rotatedDb: LocalIdentity;
export let rotatedWeb: LocalIdentity;

export async function identity(
  name: string,
  labels: Record<string, string>,
  ttlSeconds?: number,
): Promise<LocalIdentity> {
  const files = await pki.identity(name, labels, ttlSeconds ? { ttlSeconds } : {});
  return loadLocalIdentity(await readFile(files.svidFile, "utf8"), await readFile(files.keyFile, "utf8"));
}

/** Registers the suite's hooks that create (and at the end remove) the CA and the identities. */
export function useWarmIdentities(): void {
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
}

export function policyState(yaml: string, mode: EnforcementMode = "enforce") {
  const parsed = parsePolicyDocuments(yaml, "warm.yaml");
  if (!parsed.ok) throw new Error(`test policy invalid: ${JSON.stringify(parsed)}`);
  return { set: compilePolicySet(parsed.documents.map((d) => d.document)), mode };
}

export const emptyTrust = () => ({ bundle, revocations: RevocationIndex.empty(TRUST_DOMAIN) });

/** What one enforcer answered for one packet, and whether the warm table (not JS) decided it. */
export interface Given {
  readonly verdict: VerdictCode;
  readonly mark: number | undefined;
  readonly packet: Buffer | undefined;
  readonly native: boolean;
}

export class Side {
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
export interface Endpoints {
  readonly client?: number[];
  readonly port?: number;
}

/** Both ends over IPv4, or both over IPv6. */
export interface Family {
  readonly build: typeof segment;
  readonly client: number[];
  readonly server: number[];
}
export const IPV4: Family = { build: segment, client: CLIENT, server: SERVER };
export const IPV6: Family = { build: segment6, client: CLIENT6, server: SERVER6 };

export class Lab {
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

export function markOf(g: Given): number | undefined {
  return g.mark === undefined ? undefined : g.mark & MARK_MASK;
}

/** The rewritten packet an accepted verdict lets through (every handshake verdict here rewrites one). */
export function sent(g: Given): Buffer {
  expect(g.verdict).toBe(VERDICT.ACCEPT);
  if (!g.packet) throw new Error("the verdict carries no packet");
  return g.packet;
}

/** For SYN out, SYN in, SYN-ACK out, SYN-ACK in: whether the warm table decided it. */
export function nativeFlags(h: ReturnType<Lab["handshake"]>): boolean[] {
  return [h.syn, h.synIn, h.synAck, h.synAckIn].map((g) => g?.native ?? false);
}

/** The same packet with the TCP source port changed (the token is left exactly as it was). */
export function withSourcePort(packet: Buffer, port: number): Buffer {
  const out = Buffer.from(packet);
  out.writeUInt16BE(port, ((out[0] as number) & 0x0f) * 4);
  return out;
}

/** The same packet with the last byte (the token proof's last byte) flipped. */
export function withLastByteFlipped(packet: Buffer): Buffer {
  const out = Buffer.from(packet);
  out[out.length - 1] = (out[out.length - 1] as number) ^ 0x01;
  return out;
}
