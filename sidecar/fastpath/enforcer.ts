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
 * The handlers are in syn.ts and syn-ack.ts; this class owns the queues, the identities and pair
 * keys, policy, the flow records and the statistics (enforcer-stats.ts). Every decision is a flow
 * record. Every packet gets a verdict; anything unexpected is dropped.
 *
 * Warm handshakes (MAC proofs between peers already verified, with a policy decision already made
 * for that peer, address and port) are decided by the native warm table inside the queue, without
 * entering JS; this class teaches the table after each handshake it decides itself (through
 * warm-teacher.ts), and collects the table's decisions for flow records. Per-connection state
 * (nonces, replay cache) lives in the table for both paths.
 */
import { createPublicKey } from "node:crypto";
import type { KeyObject } from "node:crypto";
import type { FlowRecord } from "../../core/flow.ts";
import type { Peer, WorkloadIdentity } from "../../core/identity.ts";
import { evaluate, refusalDecision } from "../../core/policy/index.ts";
import type { Decision } from "../../core/policy/index.ts";
import { PacketQueue, TCP_FLAGS, WarmHandshakes, parseTcp } from "../../native/index.ts";
import type { QueuedPacket, TcpInfo } from "../../native/index.ts";
import type { EnforcerCounters, EnforcerStats, PacketKind } from "./enforcer-stats.ts";
import { PacketTimer, newCounters, withWarmTable } from "./enforcer-stats.ts";
import type { EnforcerSettings, LearnedServer, LocalIdentity, PolicyState } from "./enforcer-state.ts";
import { flowRecord } from "./flow-record.ts";
import type { UnreportedFlow } from "./flow-record.ts";
import { Answer } from "./handshake.ts";
import type { HandshakeContext, KnownServer } from "./handshake.ts";
import { MARKS } from "./marks.ts";
import { peerSynAck, ourSynAck } from "./syn-ack.ts";
import { ourSyn, peerSyn } from "./syn.ts";
import { chainDigest, chainSection, derivePairKey, encodeToken, newNonce } from "./token.ts";
import type { FourTuple } from "./token.ts";
import { TokenVerifier } from "./verifier.ts";
import type { TrustState, VerifiedToken } from "./verifier.ts";
import { WarmTeacher } from "./warm-teacher.ts";

export type { EnforcerCounters, EnforcerStats, PacketKind, PacketTiming } from "./enforcer-stats.ts";
export type { EnforcerSettings, LearnedServer, LocalIdentity, PolicyState } from "./enforcer-state.ts";

const HOOK_LOCAL_OUT = 3;
/** How often the warm table's decisions become flow records. */
const WARM_FLOW_REPORT_MS = 20;
/** How many peers' pair keys and last-seen server identities are kept (LRU). */
const MAX_PEERS = 4096;

function remember<V>(map: Map<string, V>, key: string, value: V): void {
  map.delete(key);
  map.set(key, value);
  if (map.size > MAX_PEERS) map.delete(map.keys().next().value as string);
}

const HANDLERS: Record<PacketKind, (ctx: HandshakeContext, a: Answer, p: QueuedPacket, i: TcpInfo) => void> =
  {
    ourSyn,
    peerSyn,
    ourSynAck,
    peerSynAck,
  };

export class FastPathEnforcer {
  private readonly queues: PacketQueue[] = [];
  private readonly verifier: TokenVerifier;
  private readonly warm: WarmHandshakes;
  private readonly teacher: WarmTeacher;
  private flowTimer: NodeJS.Timeout | null = null;
  private local: LocalIdentity;
  /** This side's identities with their chain digests, newest first; older ones kept until they expire so
   * peers that still derive pair keys against them keep working across a rotation. */
  private locals: { local: LocalIdentity; digest: string }[] = [];
  private readonly pairKeys = new Map<string, Buffer>();
  /** Server identities learned from verified SYN-ACKs, by "address|port": next time, a warm handshake. */
  private readonly knownServers = new Map<string, KnownServer>();
  private policy: PolicyState;
  /** Told about every server identity this enforcer verifies for the first time (or anew). */
  onServerLearned: ((learned: LearnedServer) => void) | null = null;
  private readonly answer = new Answer();
  private readonly timer = new PacketTimer();
  private readonly unreported: UnreportedFlow[] = [];
  private reportScheduled = false;
  readonly counters: EnforcerCounters = newCounters();
  private readonly context: HandshakeContext;

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
    this.teacher = new WarmTeacher(this.warm, this.reportFlows);
    this.warm.setLocal(chainSection(state.local.chain), Buffer.from(this.current.digest, "hex"));
    this.verifier = new TokenVerifier(state.trust, {
      windowMs: settings.windowMs,
      identityCacheEntries: settings.identityCacheEntries ?? 4096,
      replays: this.warm,
      now,
    });
    this.context = this.handshakeContext();
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
    this.teacher.forget("peers");
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
    this.teacher.forget("peers");
  }

  setPolicy(policy: PolicyState): void {
    this.policy = policy;
    this.teacher.forget("decisions");
  }

  stats(): EnforcerStats {
    const cache = this.verifier.identities;
    return {
      queues: this.queues.map((q) => q.stats()),
      counters: withWarmTable(this.counters, this.warm.stats()),
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

  /**
   * Entry point for every queued packet; always ends in exactly one verdict (a handler that gives
   * none leaves the default, DROP). The verdict goes out before the flow record is built: records are
   * reported from the next turn of the event loop, off the path of this and the next handshake packet.
   */
  handle(queue: Pick<PacketQueue, "verdict">, p: QueuedPacket): void {
    this.timer.begin();
    const answer = this.answer.reset();
    const kind = this.decidePacket(answer, p);
    this.timer.decided();
    queue.verdict(p.id, answer.verdict, answer.mark, answer.packet);
    if (kind) this.timer.record(this.counters.timing[kind]);
    if (this.unreported.length > 0) this.scheduleReport();
  }

  private scheduleReport(): void {
    if (this.reportScheduled) return;
    this.reportScheduled = true;
    setImmediate(this.reportFlows);
  }

  /** Reports the flow records of packets already answered, the warm table's too; also run at once by stop(). */
  private readonly reportFlows = (): void => {
    this.reportScheduled = false;
    for (const f of this.warm.takeFlows())
      this.onFlow(flowRecord(this.teacher.flowOf(f, this.local.identity)));
    for (const f of this.unreported.splice(0)) this.onFlow(flowRecord(f));
  };

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
    HANDLERS[kind](this.context, answer, p, info);
    return kind;
  }

  /** The enforcer as the handshake handlers see it. */
  private handshakeContext(): HandshakeContext {
    const serverKey = (address: string, port: number): string => `${address}|${port}`;
    return {
      exid: this.settings.exid,
      counters: this.counters,
      warm: this.warm,
      now: () => this.now(),
      current: () => this.current,
      pairKey: (localDigest, peerDigest, peerPublicKey) =>
        this.pairKey(localDigest, peerDigest, peerPublicKey),
      verify: (token, type, tuple, sentNonces) =>
        this.verifier.verify(token, type, tuple, sentNonces, this.resolvePairKey),
      knownServer: (address, port) => this.knownServers.get(serverKey(address, port)),
      knowServer: (address, port, digest, publicKey) => this.knowServer(address, port, digest, publicKey),
      forgetServer: (address, port) => {
        this.knownServers.delete(serverKey(address, port));
        this.warm.forgetServer(address, port);
      },
      serverLearned: (learned) => this.onServerLearned?.(learned),
      teachPeer: (verified) => this.teachPeer(verified),
      decide: (direction, peer, port) => this.decide(direction, peer, port),
      decideTaught: (direction, peerRef, identity, address, port) =>
        this.decideTaught(direction, peerRef, identity, address, port),
      flow: (direction, tuple, peer, decision) => this.flow(direction, tuple, peer, decision),
    };
  }

  /** A server this side may prove itself to by MAC from now on, here and in the warm table. */
  private knowServer(address: string, port: number, digest: string, publicKey: KeyObject): void {
    remember(this.knownServers, `${address}|${port}`, { digest, publicKey });
    const key = this.pairKey(this.current.digest, digest, publicKey);
    if (key) this.warm.learnServer(address, port, Buffer.from(digest, "hex"), key);
  }

  private teachPeer(verified: VerifiedToken): number {
    return this.teacher.teachPeer(
      verified,
      this.pairKey(this.current.digest, verified.digest, verified.publicKey),
    );
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
    this.teacher.teachDecision(direction, peerRef, address, port, decision);
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
}
