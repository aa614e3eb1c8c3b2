/**
 * The fast-path enforcer: takes the handshake packets NFQUEUE hands over and decides them.
 *
 * - our SYN (OUTPUT): sign a SYN token for the 4-tuple, insert it, remember the nonce;
 * - a peer's SYN (PREROUTING): strip and verify its token (or treat a token-less peer as external,
 *   matched by address), evaluate ingress policy, accept with a mark or refuse (the rules reset it);
 * - our SYN-ACK (OUTPUT): insert a SYN-ACK token bound to the client's nonce;
 * - a peer's SYN-ACK (PREROUTING): strip and verify its token against the nonce we sent, evaluate
 *   egress policy, accept or rewrite it into a RST for the local socket.
 *
 * Every decision is a flow record. Every packet gets a verdict; anything unexpected is dropped.
 *
 * Warm handshakes (MAC proofs between peers already verified, with a policy decision already made
 * for that peer, address and port) are decided by the native warm table inside the queue, without
 * entering JS; this class teaches the table after each handshake it decides itself, and collects
 * the table's decisions for flow records. Per-connection state (nonces, replay cache) lives in the
 * table for both paths.
 */
import { createPublicKey, randomUUID } from "node:crypto";
import type { KeyObject } from "node:crypto";
import type { FlowEndpoint, FlowRecord } from "../../core/flow.ts";
import type { Peer, WorkloadIdentity } from "../../core/identity.ts";
import { evaluate, refusalDecision } from "../../core/policy/index.ts";
import type { CompiledPolicySet, Decision, EnforcementMode } from "../../core/policy/index.ts";
import {
  PacketQueue,
  TCP_FLAGS,
  VERDICT,
  WarmHandshakes,
  extractToken,
  insertToken,
  parseTcp,
  rewriteAsReset,
  threadCpuMicros,
} from "../../native/index.ts";
import type {
  QueueStats,
  QueuedPacket,
  TcpInfo,
  VerdictCode,
  WarmFlow,
  WarmKindStats,
} from "../../native/index.ts";
import {
  MARKS,
  MARK_ACCEPTED,
  MARK_DENY,
  MARK_PENDING_IN,
  MARK_PENDING_OUT,
  MARK_REFUSED,
  withMark,
} from "./marks.ts";
import { TokenError, chainDigest, chainSection, derivePairKey, encodeToken, newNonce } from "./token.ts";
import type { FourTuple, TokenRejection } from "./token.ts";
import { TokenVerifier } from "./verifier.ts";
import type { TrustState, VerifiedToken } from "./verifier.ts";

const HOOK_LOCAL_OUT = 3;
const MAX_NONCES_PER_CONNECTION = 8;
/** How often the warm table's decisions become flow records. */
const WARM_FLOW_REPORT_MS = 20;
/** Peers and decisions taught to the warm table before it starts afresh (their refs stay bounded). */
const MAX_TAUGHT_PEERS = 4096;
const MAX_TAUGHT_DECISIONS = 65_536;

export interface LocalIdentity {
  readonly identity: WorkloadIdentity;
  /** SVID chain, leaf first, DER. */
  readonly chain: readonly Buffer[];
  readonly privateKey: KeyObject;
}

export interface PolicyState {
  readonly set: CompiledPolicySet;
  readonly mode: EnforcementMode;
}

export interface EnforcerSettings {
  /** First NFQUEUE number and how many (the rules spread connections over them by client port). */
  readonly queueFirst: number;
  readonly queueCount: number;
  /** RFC 6994 ExID that marks our token option. */
  readonly exid: number;
  /** Token timestamp tolerance, either way. */
  readonly windowMs: number;
  /** Largest token this side will send; chosen to fit a SYN under the path MSS. */
  readonly maxTokenBytes: number;
  readonly identityCacheEntries?: number;
  readonly replayCacheEntries?: number;
  readonly queueLength?: number;
}

export interface EnforcerCounters {
  synSigned: number;
  synAccepted: number;
  synDenied: number;
  synAckSigned: number;
  synAckAccepted: number;
  synAckRefused: number;
  warmVerifications: number;
  /** Handshake tokens proved by MAC under a pair key (the warm path) rather than a signature. */
  macProofs: number;
  coldVerifications: number;
  /** Server identities taken from sibling workers (learnServer). */
  serversShared: number;
  malformedPackets: number;
  /** Where each kind of handshake packet's time goes in JS (sums; divide by count). */
  timing: Record<PacketKind, PacketTiming>;
  /** The native warm table's share: packets it decided (and their time), packets it left to JS. */
  warm: Record<PacketKind, WarmKindStats>;
  rejections: Partial<Record<TokenRejection | "no-state" | "policy" | "token-too-large", number>>;
}

export type PacketKind = "ourSyn" | "peerSyn" | "ourSynAck" | "peerSynAck";

export interface PacketTiming {
  count: number;
  /** Wall-clock µs from the packet's arrival in JS to its verdict: parsing, token work, policy. */
  decideUs: number;
  /**
   * Wall-clock µs inside the verdict call: the netlink send, during which the kernel re-injects the
   * packet and carries it on (up through TCP, or out of the interface) before returning.
   */
  verdictUs: number;
  /** Packets whose thread CPU time was read (one in eight at random: each reading is a system call). */
  cpuSamples: number;
  /** This thread's CPU µs deciding, over the sampled packets: the cost, however loaded the machine is. */
  decideCpuUs: number;
  verdictCpuUs: number;
}

const CPU_SAMPLE_RATE = 1 / 8;

const emptyTiming = (): PacketTiming => ({
  count: 0,
  decideUs: 0,
  verdictUs: 0,
  cpuSamples: 0,
  decideCpuUs: 0,
  verdictCpuUs: 0,
});

export interface EnforcerStats {
  readonly queues: readonly QueueStats[];
  readonly counters: EnforcerCounters;
  readonly identityCache: { readonly size: number; readonly hits: number; readonly misses: number };
}

interface KnownPeer {
  readonly digest: string;
  readonly publicKey: KeyObject;
}

/**
 * A server identity this enforcer verified in a SYN-ACK, in a form another thread can take: the
 * workers share them so a connection that lands on another queue is a warm handshake too.
 */
export interface LearnedServer {
  readonly address: string;
  readonly port: number;
  /** Digest of the server's verified certificate chain. */
  readonly digest: string;
  /** Its leaf public key, SPKI DER. */
  readonly publicKeyDer: Buffer;
}

/** How many peers' pair keys and last-seen server identities are kept (LRU). */
const MAX_PEERS = 4096;

function remember<V>(map: Map<string, V>, key: string, value: V): void {
  map.delete(key);
  map.set(key, value);
  if (map.size > MAX_PEERS) map.delete(map.keys().next().value as string);
}

/** One packet's verdict as a handler decided it; handle() sends it. DROP until a handler says otherwise. */
class Answer {
  verdict: VerdictCode = VERDICT.DROP;
  mark: number | undefined;
  packet: Buffer | undefined;
  private given = false;

  reset(): this {
    this.verdict = VERDICT.DROP;
    this.mark = undefined;
    this.packet = undefined;
    this.given = false;
    return this;
  }

  give(verdict: VerdictCode, mark?: number, packet?: Buffer): void {
    if (this.given) throw new Error("a handshake packet was given two verdicts");
    this.given = true;
    this.verdict = verdict;
    this.mark = mark;
    this.packet = packet;
  }
}

/** A decision waiting for its flow record (the identity is the one that decided, even if rotated since). */
interface UnreportedFlow {
  readonly direction: "ingress" | "egress";
  readonly tuple: FourTuple;
  readonly peer: WorkloadIdentity | null;
  readonly decision: Decision;
  readonly time: number;
  readonly local: WorkloadIdentity;
}

const emptyWarmKind = (): WarmKindStats => ({ handled: 0, handedToJs: 0, decideUs: 0, verdictUs: 0 });

export class FastPathEnforcer {
  private readonly queues: PacketQueue[] = [];
  private readonly verifier: TokenVerifier;
  private readonly warm: WarmHandshakes;
  /** What the warm table's refs stand for: peers by chain digest, and policy decisions. */
  private readonly peerRefs = new Map<string, number>();
  private taughtPeers: WorkloadIdentity[] = [];
  private taughtDecisions: Decision[] = [];
  private flowTimer: NodeJS.Timeout | null = null;
  private local: LocalIdentity;
  /** This side's identities with their chain digests, newest first; older ones kept until they expire so
   * peers that still derive pair keys against them keep working across a rotation. */
  private locals: { local: LocalIdentity; digest: string }[] = [];
  private readonly pairKeys = new Map<string, Buffer>();
  /** Server identities learned from verified SYN-ACKs, by "address|port": next time, a warm handshake. */
  private readonly knownServers = new Map<string, KnownPeer>();
  private policy: PolicyState;
  /** Told about every server identity this enforcer verifies for the first time (or anew). */
  onServerLearned: ((learned: LearnedServer) => void) | null = null;
  private readonly answer = new Answer();
  private readonly unreported: UnreportedFlow[] = [];
  private reportScheduled = false;
  readonly counters: EnforcerCounters = {
    synSigned: 0,
    synAccepted: 0,
    synDenied: 0,
    synAckSigned: 0,
    synAckAccepted: 0,
    synAckRefused: 0,
    warmVerifications: 0,
    macProofs: 0,
    coldVerifications: 0,
    serversShared: 0,
    malformedPackets: 0,
    timing: {
      ourSyn: emptyTiming(),
      peerSyn: emptyTiming(),
      ourSynAck: emptyTiming(),
      peerSynAck: emptyTiming(),
    },
    warm: {
      ourSyn: emptyWarmKind(),
      peerSyn: emptyWarmKind(),
      ourSynAck: emptyWarmKind(),
      peerSynAck: emptyWarmKind(),
    },
    rejections: {},
  };

  constructor(
    private readonly settings: EnforcerSettings,
    state: { local: LocalIdentity; trust: TrustState; policy: PolicyState },
    private readonly onFlow: (record: FlowRecord) => void,
    private readonly now: () => number = Date.now,
  ) {
    this.checkTokenSize(state.local);
    this.local = state.local;
    this.locals = [{ local: state.local, digest: chainDigest(state.local.chain) }];
    this.policy = state.policy;
    this.warm = new WarmHandshakes({
      exid: settings.exid,
      windowMs: settings.windowMs,
      replayEntries: settings.replayCacheEntries ?? 262_144,
      marks: MARKS,
    });
    this.warm.setLocal(chainSection(state.local.chain), Buffer.from(this.current.digest, "hex"));
    this.verifier = new TokenVerifier(state.trust, {
      windowMs: settings.windowMs,
      identityCacheEntries: settings.identityCacheEntries ?? 4096,
      replays: this.warm,
      now,
    });
  }

  private get current(): { local: LocalIdentity; digest: string } {
    return this.locals[0] as { local: LocalIdentity; digest: string };
  }

  /** Binds the queues; from here on, handshakes of fast-path ports are decided by this object. */
  start(): void {
    if (this.queues.length > 0) return;
    try {
      for (let i = 0; i < this.settings.queueCount; i++) {
        const q: PacketQueue = new PacketQueue(
          this.settings.queueFirst + i,
          { maxLength: this.settings.queueLength ?? 4096 },
          (p) => this.handle(q, p),
          this.warm,
        );
        this.queues.push(q);
      }
    } catch (err) {
      this.stop();
      throw err;
    }
    this.flowTimer = setInterval(this.reportFlows, WARM_FLOW_REPORT_MS);
    this.flowTimer.unref();
  }

  /** Unbinds the queues. The rules stay: new handshakes now fail closed (or open with --queue-bypass). */
  stop(): void {
    for (const q of this.queues.splice(0)) q.close();
    if (this.flowTimer) clearInterval(this.flowTimer);
    this.flowTimer = null;
    this.reportFlows();
  }

  /** A rotated SVID: the next handshake uses it, connections in progress are unaffected. */
  setIdentity(local: LocalIdentity): void {
    this.checkTokenSize(local);
    // The warm table's pending decisions were made as the identity being replaced.
    this.reportFlows();
    this.local = local;
    const now = this.now();
    this.locals = [
      { local, digest: chainDigest(local.chain) },
      ...this.locals.filter((l) => l.local.identity.notAfter.getTime() > now),
    ];
    this.warm.setLocal(chainSection(local.chain), Buffer.from(this.current.digest, "hex"));
    this.forgetTaught("peers");
  }

  /**
   * A server identity a sibling enforcer (another queue's worker in this process) verified: the
   * next SYN to that server proves itself by MAC here too instead of by signature.
   */
  learnServer(learned: LearnedServer): void {
    const publicKey = createPublicKey({ key: learned.publicKeyDer, format: "der", type: "spki" });
    this.knowServer(learned.address, learned.port, learned.digest, publicKey);
    this.counters.serversShared++;
  }

  /** New trust bundle or revocation list: nothing verified before counts, in JS or native. */
  setTrust(trust: TrustState): void {
    this.verifier.setTrust(trust);
    this.forgetTaught("peers");
  }

  setPolicy(policy: PolicyState): void {
    this.policy = policy;
    this.forgetTaught("decisions");
  }

  stats(): EnforcerStats {
    const cache = this.verifier.identities;
    const counters = structuredClone(this.counters);
    const w = this.warm.stats();
    counters.synSigned += w.synSigned;
    counters.synAccepted += w.synAccepted;
    counters.synDenied += w.synDenied;
    counters.synAckSigned += w.synAckSigned;
    counters.synAckAccepted += w.synAckAccepted;
    counters.synAckRefused += w.synAckRefused;
    counters.warmVerifications += w.macProofs;
    counters.macProofs += w.macProofs;
    if (w.policyRefusals > 0)
      counters.rejections.policy = (counters.rejections.policy ?? 0) + w.policyRefusals;
    counters.warm = structuredClone(w.kinds);
    return {
      queues: this.queues.map((q) => q.stats()),
      counters,
      identityCache: { size: cache.size, hits: cache.hits, misses: cache.misses },
    };
  }

  /**
   * Decides a packet handed over directly rather than by a queue (benchmarks, tests): the warm
   * table first, as a queue does, then JS.
   */
  handleDirect(queue: Pick<PacketQueue, "verdict">, p: QueuedPacket): void {
    const warm = this.warm.handle(p.hook, p.mark, p.packet, this.now());
    if (!warm) {
      this.handle(queue, p);
      return;
    }
    queue.verdict(p.id, warm.verdict, warm.mark, warm.packet);
    this.scheduleReport();
  }

  private scheduleReport(): void {
    if (this.reportScheduled) return;
    this.reportScheduled = true;
    setImmediate(this.reportFlows);
  }

  /**
   * Drops what the warm table was taught — "peers" (and with them every decision) or "decisions"
   * only — once the flow records of what it decided with them are out.
   */
  private forgetTaught(what: "peers" | "decisions"): void {
    this.reportFlows();
    if (what === "peers") {
      this.warm.forgetPeers();
      this.peerRefs.clear();
      this.taughtPeers = [];
    } else {
      this.warm.forgetDecisions();
    }
    this.taughtDecisions = [];
  }

  /** A server this side may prove itself to by MAC from now on, here and in the warm table. */
  private knowServer(address: string, port: number, digest: string, publicKey: KeyObject): void {
    remember(this.knownServers, `${address}|${port}`, { digest, publicKey });
    const key = this.pairKey(this.current.digest, digest, publicKey);
    if (key) this.warm.learnServer(address, port, Buffer.from(digest, "hex"), key);
  }

  /** Teaches the warm table a peer JS verified; returns the ref its decisions and flows use. */
  private teachPeer(verified: VerifiedToken): number {
    let ref = this.peerRefs.get(verified.digest);
    if (ref === undefined) {
      if (this.taughtPeers.length >= MAX_TAUGHT_PEERS) this.forgetTaught("peers");
      ref = this.taughtPeers.push(verified.identity) - 1;
      this.peerRefs.set(verified.digest, ref);
    }
    const key = this.pairKey(this.current.digest, verified.digest, verified.publicKey);
    if (key) {
      this.warm.rememberPeer(
        verified.token.chainBytes,
        verified.token.type === "syn" ? "client" : "server",
        Buffer.from(verified.digest, "hex"),
        ref,
        verified.validUntilMs,
        key,
      );
    }
    return ref;
  }

  /** A policy decision for a verified peer, taught to the warm table unless the engine failed. */
  private decideTaught(
    direction: "ingress" | "egress",
    peerRef: number,
    identity: WorkloadIdentity,
    address: string,
    port: number,
  ): Decision {
    let decision: Decision;
    try {
      decision = this.evaluate(direction, { kind: "workload", identity, address }, port);
    } catch (err) {
      return refusalDecision(`policy-error: ${(err as Error).message}`);
    }
    if (this.taughtDecisions.length >= MAX_TAUGHT_DECISIONS) this.forgetTaught("decisions");
    const decisionRef = this.taughtDecisions.push(decision) - 1;
    this.warm.rememberDecision(direction, peerRef, address, port, decision.verdict === "allow", decisionRef);
    return decision;
  }

  private checkTokenSize(local: LocalIdentity): void {
    const probe = encodeToken(local, {
      type: "syn-ack",
      nonce: newNonce(),
      echoNonce: newNonce(),
      timestampMs: this.now(),
      tuple: { clientAddress: "::", clientPort: 0, serverAddress: "::", serverPort: 0 },
    });
    if (probe.length > this.settings.maxTokenBytes) {
      throw new RangeError(
        `fast-path token for ${local.identity.spiffeId} is ${probe.length} bytes, over the ${this.settings.maxTokenBytes}-byte limit that keeps a SYN under the path MSS (fewer labels or a shorter chain needed)`,
      );
    }
  }

  /**
   * Entry point for every queued packet; always ends in exactly one verdict (a handler that gives
   * none leaves the default, DROP). The verdict goes out before the flow record is built: records are
   * reported from the next turn of the event loop, off the path of this and the next handshake packet.
   */
  handle(queue: Pick<PacketQueue, "verdict">, p: QueuedPacket): void {
    // Random rather than every n-th packet: handshakes alternate kinds, so a fixed stride would see one kind only.
    const sampleCpu = Math.random() < CPU_SAMPLE_RATE;
    const startedCpu = sampleCpu ? threadCpuMicros() : 0;
    const started = process.hrtime.bigint();
    const answer = this.answer.reset();
    const kind = this.decidePacket(answer, p);
    const decided = process.hrtime.bigint();
    const decidedCpu = sampleCpu ? threadCpuMicros() : 0;
    queue.verdict(p.id, answer.verdict, answer.mark, answer.packet);
    if (kind) {
      const t = this.counters.timing[kind];
      t.count++;
      t.decideUs += Number(decided - started) / 1000;
      t.verdictUs += Number(process.hrtime.bigint() - decided) / 1000;
      if (sampleCpu) {
        t.cpuSamples++;
        t.decideCpuUs += decidedCpu - startedCpu;
        t.verdictCpuUs += threadCpuMicros() - decidedCpu;
      }
    }
    if (this.unreported.length > 0) this.scheduleReport();
  }

  /** Reports the flow records of packets already answered, the warm table's too; also run at once by stop(). */
  private readonly reportFlows = (): void => {
    this.reportScheduled = false;
    for (const f of this.warm.takeFlows()) this.onFlow(this.flowRecord(this.warmFlow(f)));
    for (const f of this.unreported.splice(0)) this.onFlow(this.flowRecord(f));
  };

  private warmFlow(f: WarmFlow): UnreportedFlow {
    return {
      direction: f.direction,
      tuple: f.tuple,
      peer: this.taughtPeers[f.peerRef] ?? null,
      decision:
        this.taughtDecisions[f.decisionRef] ?? refusalDecision("decision no longer known (internal error)"),
      time: f.timeMs,
      local: this.local.identity,
    };
  }

  /** Sorts a packet to its handler; null for a packet that is no handshake we queue (dropped). */
  private decidePacket(answer: Answer, p: QueuedPacket): PacketKind | null {
    let info: TcpInfo;
    try {
      info = parseTcp(p.packet, this.settings.exid);
    } catch {
      this.counters.malformedPackets++;
      return null;
    }
    const syn = (info.flags & TCP_FLAGS.SYN) !== 0;
    const ack = (info.flags & TCP_FLAGS.ACK) !== 0;
    const outbound = p.hook === HOOK_LOCAL_OUT;
    if (!syn || (info.flags & (TCP_FLAGS.RST | TCP_FLAGS.FIN)) !== 0) {
      this.counters.malformedPackets++;
      return null;
    }
    const kind = ack ? (outbound ? "ourSynAck" : "peerSynAck") : outbound ? "ourSyn" : "peerSyn";
    if (kind === "ourSyn") this.ourSyn(answer, p, info);
    else if (kind === "peerSyn") this.peerSyn(answer, p, info);
    else if (kind === "ourSynAck") this.ourSynAck(answer, p, info);
    else this.peerSynAck(answer, p, info);
    return kind;
  }

  private reject(reason: TokenRejection | "no-state" | "policy" | "token-too-large"): void {
    this.counters.rejections[reason] = (this.counters.rejections[reason] ?? 0) + 1;
  }

  private ourSyn(answer: Answer, p: QueuedPacket, info: TcpInfo): void {
    const tuple = {
      clientAddress: info.src,
      clientPort: info.srcPort,
      serverAddress: info.dst,
      serverPort: info.dstPort,
    };
    if (info.hasToken || info.payloadLength > 0) {
      // Only this enforcer puts tokens on SYNs; a local SYN that already has one (or data) is not ours to sign.
      this.counters.malformedPackets++;
      answer.give(VERDICT.ACCEPT, withMark(p.mark, MARK_DENY));
      return;
    }
    const nonce = newNonce();
    const previous = this.warm.pendingOut(tuple, this.now());
    const serverKey = `${info.dst}|${info.dstPort}`;
    // A retransmitted SYN may mean the server could not check our MAC (it lost the key we derived
    // against): forget what we knew and prove ourselves with a signature this time.
    if (previous) {
      this.knownServers.delete(serverKey);
      this.warm.forgetServer(info.dst, info.dstPort);
    }
    const known = this.knownServers.get(serverKey);
    let packet: Buffer;
    try {
      const current = this.current;
      const pairKey = known ? this.pairKey(current.digest, known.digest, known.publicKey) : null;
      if (known && pairKey) {
        this.warm.learnServer(info.dst, info.dstPort, Buffer.from(known.digest, "hex"), pairKey);
      }
      const token = encodeToken(current.local, {
        type: "syn",
        nonce,
        timestampMs: this.now(),
        tuple,
        ...(known && pairKey ? { mac: { key: pairKey, keyId: Buffer.from(known.digest, "hex") } } : {}),
      });
      packet = insertToken(p.packet, token, this.settings.exid);
    } catch (err) {
      this.reject("token-too-large");
      answer.give(VERDICT.ACCEPT, withMark(p.mark, MARK_DENY));
      this.flow("egress", tuple, null, {
        verdict: "deny",
        wouldDeny: false,
        policy: null,
        reason: `cannot add the identity token to the SYN: ${(err as Error).message}`,
        logged: [],
      });
      return;
    }
    // A SYN retransmission gets a fresh nonce; the SYN-ACK may answer any of them.
    const nonces = previous ? [...previous, nonce].slice(-MAX_NONCES_PER_CONNECTION) : [nonce];
    this.warm.setPendingOut(tuple, nonces, this.now());
    this.counters.synSigned++;
    answer.give(VERDICT.ACCEPT, withMark(p.mark, MARK_PENDING_OUT), packet);
  }

  private peerSyn(answer: Answer, p: QueuedPacket, info: TcpInfo): void {
    const tuple = {
      clientAddress: info.src,
      clientPort: info.srcPort,
      serverAddress: info.dst,
      serverPort: info.dstPort,
    };
    const extracted = this.safeExtract(p.packet);
    if (extracted === "malformed") {
      this.counters.malformedPackets++;
      this.reject("malformed");
      answer.give(VERDICT.ACCEPT, withMark(p.mark, MARK_DENY));
      return;
    }
    if (extracted === null) {
      if (info.payloadLength > 0) {
        // Data on a SYN without our option: not a token handshake we understand (e.g. TFO); refuse.
        this.reject("malformed");
        answer.give(VERDICT.ACCEPT, withMark(p.mark, MARK_DENY));
        this.flow("ingress", tuple, null, refusalDecision("SYN carries data without a token option"));
        return;
      }
      const decision = this.decide("ingress", { kind: "external", address: info.src }, info.dstPort);
      this.finishSyn(answer, p, tuple, null, decision, MARK_ACCEPTED, undefined);
      return;
    }
    let identity: WorkloadIdentity;
    let nonce: Buffer;
    let mac: { key: Buffer; keyId: Buffer } | null = null;
    let peerRef: number;
    try {
      const verified = this.verifier.verify(extracted.token, "syn", tuple, undefined, this.resolvePairKey);
      if (verified.cached) this.counters.warmVerifications++;
      else this.counters.coldVerifications++;
      identity = verified.identity;
      nonce = Buffer.from(verified.token.nonce);
      if (verified.token.proofKind === "mac") this.counters.macProofs++;
      peerRef = this.teachPeer(verified);
      const current = this.current;
      // Answer a MAC in kind only if it was made against our current certificate, the one our
      // SYN-ACK carries; otherwise a signature, which also teaches the client our new certificate.
      if (verified.token.proofKind === "mac" && verified.token.keyId?.toString("hex") === current.digest) {
        const key = this.pairKey(current.digest, verified.digest, verified.publicKey);
        if (key) mac = { key, keyId: Buffer.from(verified.digest, "hex") };
      }
    } catch (err) {
      const reason = err instanceof TokenError ? err.reason : "malformed";
      this.reject(reason);
      if (reason === "unknown-key") {
        // The client derived its MAC against a key we no longer hold (we restarted or rotated):
        // stay silent rather than reset, so its SYN retransmission comes signed and succeeds.
        answer.give(VERDICT.DROP);
        return;
      }
      // Stripped, so the RST the rules send acknowledges exactly the SYN (ISN + 1) and the client's
      // stack accepts it; with the token still attached the RST would acknowledge the token bytes too.
      answer.give(VERDICT.ACCEPT, withMark(p.mark, MARK_DENY), extracted.packet);
      this.counters.synDenied++;
      this.flow(
        "ingress",
        tuple,
        null,
        refusalDecision(`token rejected (${reason}): ${(err as Error).message}`),
      );
      return;
    }
    const decision = this.decideTaught("ingress", peerRef, identity, info.src, info.dstPort);
    this.finishSyn(answer, p, tuple, identity, decision, MARK_PENDING_IN, extracted.packet, { nonce, mac });
  }

  private finishSyn(
    answer: Answer,
    p: QueuedPacket,
    tuple: FourTuple,
    identity: WorkloadIdentity | null,
    decision: Decision,
    acceptMark: number,
    stripped: Buffer | undefined,
    client?: { nonce: Buffer; mac: { key: Buffer; keyId: Buffer } | null },
  ): void {
    if (decision.verdict === "allow") {
      if (client) this.warm.setPendingIn(tuple, client.nonce, client.mac, this.now());
      this.counters.synAccepted++;
      answer.give(VERDICT.ACCEPT, withMark(p.mark, acceptMark), stripped);
    } else {
      this.reject("policy");
      this.counters.synDenied++;
      answer.give(VERDICT.ACCEPT, withMark(p.mark, MARK_DENY), stripped);
    }
    this.flow("ingress", tuple, identity, decision);
  }

  private ourSynAck(answer: Answer, p: QueuedPacket, info: TcpInfo): void {
    const tuple = {
      clientAddress: info.dst,
      clientPort: info.dstPort,
      serverAddress: info.src,
      serverPort: info.srcPort,
    };
    const pending = this.warm.pendingIn(tuple, this.now());
    if (!pending || info.hasToken || info.payloadLength > 0) {
      // Without the client's nonce the answer cannot be bound; the client's SYN retransmission
      // brings a fresh one.
      this.reject("no-state");
      answer.give(VERDICT.DROP);
      return;
    }
    try {
      const token = encodeToken(this.local, {
        type: "syn-ack",
        nonce: newNonce(),
        echoNonce: pending.clientNonce,
        timestampMs: this.now(),
        tuple,
        ...(pending.mac ? { mac: pending.mac } : {}),
      });
      const packet = insertToken(p.packet, token, this.settings.exid);
      this.counters.synAckSigned++;
      answer.give(VERDICT.ACCEPT, undefined, packet);
    } catch {
      this.reject("token-too-large");
      answer.give(VERDICT.DROP);
    }
  }

  private peerSynAck(answer: Answer, p: QueuedPacket, info: TcpInfo): void {
    const tuple = {
      clientAddress: info.dst,
      clientPort: info.dstPort,
      serverAddress: info.src,
      serverPort: info.srcPort,
    };
    const pending = this.warm.pendingOut(tuple, this.now());
    const refuse = (identity: WorkloadIdentity | null, decision: Decision): void => {
      this.counters.synAckRefused++;
      answer.give(VERDICT.ACCEPT, withMark(p.mark, MARK_REFUSED), rewriteAsReset(p.packet));
      this.warm.deletePendingOut(tuple);
      this.flow("egress", tuple, identity, decision);
    };
    const extracted = this.safeExtract(p.packet);
    if (extracted === "malformed") {
      this.reject("malformed");
      refuse(null, refusalDecision("SYN-ACK token option malformed"));
      return;
    }
    if (extracted === null) {
      const decision = this.decide("egress", { kind: "external", address: info.src }, info.srcPort);
      if (decision.verdict === "allow" && info.payloadLength === 0) {
        this.counters.synAckAccepted++;
        this.warm.deletePendingOut(tuple);
        answer.give(VERDICT.ACCEPT, withMark(p.mark, MARK_ACCEPTED));
        this.flow("egress", tuple, null, decision);
      } else {
        this.reject("policy");
        refuse(
          null,
          decision.verdict === "allow"
            ? refusalDecision("SYN-ACK carries data without a token option")
            : decision,
        );
      }
      return;
    }
    let identity: WorkloadIdentity;
    let peerRef: number;
    try {
      const verified = this.verifier.verify(
        extracted.token,
        "syn-ack",
        tuple,
        pending ?? [],
        this.resolvePairKey,
      );
      if (verified.cached) this.counters.warmVerifications++;
      else this.counters.coldVerifications++;
      identity = verified.identity;
      if (verified.token.proofKind === "mac") this.counters.macProofs++;
      if (this.knownServers.get(`${info.src}|${info.srcPort}`)?.digest !== verified.digest) {
        this.onServerLearned?.({
          address: info.src,
          port: info.srcPort,
          digest: verified.digest,
          publicKeyDer: verified.publicKey.export({ type: "spki", format: "der" }),
        });
      }
      this.knowServer(info.src, info.srcPort, verified.digest, verified.publicKey);
      peerRef = this.teachPeer(verified);
    } catch (err) {
      const reason = err instanceof TokenError ? err.reason : "malformed";
      this.reject(reason);
      refuse(null, refusalDecision(`SYN-ACK token rejected (${reason}): ${(err as Error).message}`));
      return;
    }
    const decision = this.decideTaught("egress", peerRef, identity, info.src, info.srcPort);
    if (decision.verdict !== "allow") {
      this.reject("policy");
      refuse(identity, decision);
      return;
    }
    this.counters.synAckAccepted++;
    this.warm.deletePendingOut(tuple);
    answer.give(VERDICT.ACCEPT, withMark(p.mark, MARK_ACCEPTED), extracted.packet);
    this.flow("egress", tuple, identity, decision);
  }

  /** The pair key between one of our identities (`localDigest`) and a peer, derived once per pair. */
  private pairKey(localDigest: string, peerDigest: string, peerPublicKey: KeyObject): Buffer | null {
    // Checked before the cache: a key derived against an identity rotated away is cached past its expiry.
    const local = this.usableLocal(localDigest);
    if (!local) return null;
    const cacheKey = `${localDigest}|${peerDigest}`;
    const cached = this.pairKeys.get(cacheKey);
    if (cached) return cached;
    const key = derivePairKey(local.local.privateKey, peerPublicKey, localDigest, peerDigest);
    remember(this.pairKeys, cacheKey, key);
    return key;
  }

  /** One of our identities a peer may still prove itself against: the current one, an older one until it expires. */
  private usableLocal(digest: string): { local: LocalIdentity; digest: string } | undefined {
    const at = this.locals.findIndex((l) => l.digest === digest);
    const found = this.locals[at];
    if (!found || (at > 0 && found.local.identity.notAfter.getTime() <= this.now())) return undefined;
    return found;
  }

  private readonly resolvePairKey = (
    keyId: Buffer,
    peerDigest: string,
    peerPublicKey: KeyObject,
  ): Buffer | null => this.pairKey(keyId.toString("hex"), peerDigest, peerPublicKey);

  private safeExtract(packet: Buffer): { packet: Buffer; token: Buffer } | null | "malformed" {
    try {
      return extractToken(packet, this.settings.exid);
    } catch {
      return "malformed";
    }
  }

  /** Never throws: every handshake packet must get exactly one verdict, so an engine failure denies. */
  private decide(direction: "ingress" | "egress", peer: Peer, port: number): Decision {
    try {
      return this.evaluate(direction, peer, port);
    } catch (err) {
      return refusalDecision(`policy-error: ${(err as Error).message}`);
    }
  }

  private evaluate(direction: "ingress" | "egress", peer: Peer, port: number): Decision {
    return evaluate(this.policy.set, {
      direction,
      local: { labels: this.local.identity.labels },
      peer,
      port,
      mode: this.policy.mode,
    });
  }

  /** Notes a decision for its flow record, built and reported once the verdict is out. */
  private flow(
    direction: "ingress" | "egress",
    tuple: FourTuple,
    peer: WorkloadIdentity | null,
    decision: Decision,
  ): void {
    this.unreported.push({ direction, tuple, peer, decision, time: this.now(), local: this.local.identity });
  }

  private flowRecord(f: UnreportedFlow): FlowRecord {
    const localEnd = (address: string): FlowEndpoint => ({
      spiffeId: f.local.spiffeId,
      labels: f.local.labels,
      address,
    });
    const peerEnd = (address: string): FlowEndpoint =>
      f.peer ? { spiffeId: f.peer.spiffeId, labels: f.peer.labels, address } : { labels: {}, address };
    const ingress = f.direction === "ingress";
    return {
      id: randomUUID(),
      time: f.time,
      reporter: { spiffeId: f.local.spiffeId, kind: "fastpath" },
      direction: f.direction,
      source: ingress ? peerEnd(f.tuple.clientAddress) : localEnd(f.tuple.clientAddress),
      destination: ingress ? localEnd(f.tuple.serverAddress) : peerEnd(f.tuple.serverAddress),
      port: f.tuple.serverPort,
      protocol: "tcp",
      verdict: f.decision.verdict,
      wouldDeny: f.decision.wouldDeny,
      policy: f.decision.policy,
      reason: f.decision.reason,
      encrypted: false,
      bytesSent: 0,
      bytesReceived: 0,
      durationMs: 0,
    };
  }
}
