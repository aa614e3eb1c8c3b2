/**
 * The enforcer's statistics: counters per outcome, where each kind of handshake packet's time goes
 * in JS (wall clock, and this thread's CPU on a random sample), and the native warm table's share
 * merged in when they are read.
 */
import { threadCpuMicros } from "../../native/index.ts";
import type { QueueStats, WarmKindStats, WarmStats } from "../../native/index.ts";
import type { TokenRejection } from "./token.ts";

export type PacketKind = "ourSyn" | "peerSyn" | "ourSynAck" | "peerSynAck";

/** Why a handshake packet was refused or dropped: a token check, no state to answer with, policy, size. */
export type Rejection = TokenRejection | "no-state" | "policy" | "token-too-large";

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
  rejections: Partial<Record<Rejection, number>>;
}

export interface EnforcerStats {
  readonly queues: readonly QueueStats[];
  readonly counters: EnforcerCounters;
  readonly identityCache: { readonly size: number; readonly hits: number; readonly misses: number };
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

const emptyWarmKind = (): WarmKindStats => ({ handled: 0, handedToJs: 0, decideUs: 0, verdictUs: 0 });

export function newCounters(): EnforcerCounters {
  return {
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
}

export function countRejection(counters: EnforcerCounters, reason: Rejection): void {
  counters.rejections[reason] = (counters.rejections[reason] ?? 0) + 1;
}

/** JS's counters with what the warm table decided on its own added in (a copy; JS's stay as they are). */
export function withWarmTable(js: EnforcerCounters, w: WarmStats): EnforcerCounters {
  const counters = structuredClone(js);
  counters.synSigned += w.synSigned;
  counters.synAccepted += w.synAccepted;
  counters.synDenied += w.synDenied;
  counters.synAckSigned += w.synAckSigned;
  counters.synAckAccepted += w.synAckAccepted;
  counters.synAckRefused += w.synAckRefused;
  counters.warmVerifications += w.macProofs;
  counters.macProofs += w.macProofs;
  if (w.policyRefusals > 0) counters.rejections.policy = (counters.rejections.policy ?? 0) + w.policyRefusals;
  counters.warm = structuredClone(w.kinds);
  return counters;
}

/** Times one packet in JS: deciding, then the verdict call; CPU time on a random sample. */
export class PacketTimer {
  private sampleCpu = false;
  private startedCpu = 0;
  private decidedCpu = 0;
  private started = 0n;
  private decidedAt = 0n;

  begin(): void {
    // Random rather than every n-th packet: handshakes alternate kinds, so a fixed stride would see one kind only.
    this.sampleCpu = Math.random() < CPU_SAMPLE_RATE;
    this.startedCpu = this.sampleCpu ? threadCpuMicros() : 0;
    this.started = process.hrtime.bigint();
  }

  decided(): void {
    this.decidedAt = process.hrtime.bigint();
    this.decidedCpu = this.sampleCpu ? threadCpuMicros() : 0;
  }

  /** Adds the packet, its verdict just given, to `t`. */
  record(t: PacketTiming): void {
    t.count++;
    t.decideUs += Number(this.decidedAt - this.started) / 1000;
    t.verdictUs += Number(process.hrtime.bigint() - this.decidedAt) / 1000;
    if (this.sampleCpu) {
      t.cpuSamples++;
      t.decideCpuUs += this.decidedCpu - this.startedCpu;
      t.verdictCpuUs += threadCpuMicros() - this.decidedCpu;
    }
  }
}
