/**
 * What the SYN and SYN-ACK handlers (syn.ts, syn-ack.ts) share: the verdict a packet is given, the
 * connection a packet belongs to, token verification with its counting and refusal, and the
 * enforcer state they read and teach (`HandshakeContext`, which the enforcer provides).
 */
import type { KeyObject } from "node:crypto";
import type { Peer, WorkloadIdentity } from "../../core/identity.ts";
import type { Decision } from "../../core/policy/index.ts";
import { VERDICT, extractToken } from "../../native/index.ts";
import type { TcpInfo, VerdictCode, WarmHandshakes } from "../../native/index.ts";
import type { EnforcerCounters, Rejection } from "./enforcer-stats.ts";
import { countRejection } from "./enforcer-stats.ts";
import type { LearnedServer, LocalIdentity } from "./enforcer-state.ts";
import { TokenError } from "./token.ts";
import type { FourTuple, TokenRejection, TokenType } from "./token.ts";
import type { VerifiedToken } from "./verifier.ts";

/** One packet's verdict as a handler decided it; the enforcer sends it. DROP until a handler says otherwise. */
export class Answer {
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

/** A server this side verified: next time it proves itself to it by MAC under their pair key. */
export interface KnownServer {
  readonly digest: string;
  readonly publicKey: KeyObject;
}

/** The enforcer state a handshake handler reads, and the effects it has on it. */
export interface HandshakeContext {
  readonly exid: number;
  readonly counters: EnforcerCounters;
  readonly warm: WarmHandshakes;
  now(): number;
  /** This side's current identity and its chain digest (what a new token carries). */
  current(): { readonly local: LocalIdentity; readonly digest: string };
  /** The pair key between one of our identities and a peer; null if that identity is no longer usable. */
  pairKey(localDigest: string, peerDigest: string, peerPublicKey: KeyObject): Buffer | null;
  verify(token: Buffer, type: TokenType, tuple: FourTuple, sentNonces?: readonly Buffer[]): VerifiedToken;
  knownServer(address: string, port: number): KnownServer | undefined;
  knowServer(address: string, port: number, digest: string, publicKey: KeyObject): void;
  forgetServer(address: string, port: number): void;
  serverLearned(learned: LearnedServer): void;
  /** Teaches the warm table a verified peer; returns the ref its decisions use. */
  teachPeer(verified: VerifiedToken): number;
  /** Policy for a peer; never throws (an engine failure is a refusal). */
  decide(direction: "ingress" | "egress", peer: Peer, port: number): Decision;
  /** Policy for a verified peer, taught to the warm table; never throws. */
  decideTaught(
    direction: "ingress" | "egress",
    peerRef: number,
    identity: WorkloadIdentity,
    address: string,
    port: number,
  ): Decision;
  /** Notes a decision for its flow record, reported once the verdict is out. */
  flow(
    direction: "ingress" | "egress",
    tuple: FourTuple,
    peer: WorkloadIdentity | null,
    decision: Decision,
  ): void;
}

/** The connection a SYN opens: its source is the client. */
export function synTuple(info: TcpInfo): FourTuple {
  return {
    clientAddress: info.src,
    clientPort: info.srcPort,
    serverAddress: info.dst,
    serverPort: info.dstPort,
  };
}

/** The connection a SYN-ACK answers: its destination is the client. */
export function synAckTuple(info: TcpInfo): FourTuple {
  return {
    clientAddress: info.dst,
    clientPort: info.dstPort,
    serverAddress: info.src,
    serverPort: info.srcPort,
  };
}

/** Counts the refusal and drops the packet: the peer's retransmission gets another chance. */
export function dropSilently(ctx: HandshakeContext, answer: Answer, reason: Rejection): void {
  countRejection(ctx.counters, reason);
  answer.give(VERDICT.DROP);
}

/** The token option taken out of a packet, null without one, "malformed" if it cannot be read. */
export function extractFrom(
  ctx: HandshakeContext,
  packet: Buffer,
): { packet: Buffer; token: Buffer } | null | "malformed" {
  try {
    return extractToken(packet, ctx.exid);
  } catch {
    return "malformed";
  }
}

export type PeerCheck<T> =
  | { readonly ok: true; readonly value: T }
  | { readonly ok: false; readonly refused: TokenRejection; readonly message: string };

/**
 * Verifies a peer's token and runs `use` on what it proves, counting warm, cold and MAC proofs. A
 * failure in either is a counted refusal, returned for the handler to answer; never a throw, since
 * every handshake packet must get exactly one verdict.
 */
export function verifyPeer<T>(
  ctx: HandshakeContext,
  token: Buffer,
  type: TokenType,
  tuple: FourTuple,
  sentNonces: readonly Buffer[] | undefined,
  use: (verified: VerifiedToken) => T,
): PeerCheck<T> {
  try {
    const verified = ctx.verify(token, type, tuple, sentNonces);
    if (verified.cached) ctx.counters.warmVerifications++;
    else ctx.counters.coldVerifications++;
    if (verified.token.proofKind === "mac") ctx.counters.macProofs++;
    return { ok: true, value: use(verified) };
  } catch (err) {
    const refused = err instanceof TokenError ? err.reason : "malformed";
    countRejection(ctx.counters, refused);
    return { ok: false, refused, message: (err as Error).message };
  }
}
