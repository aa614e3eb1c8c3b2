import type { NativeWarm, TupleArgs, VerdictCode, WarmPacketKind, WarmSettings, WarmStats } from "./addon.ts";
import { load } from "./load.ts";

/** A connection, client side first. */
export interface ConnectionTuple {
  readonly clientAddress: string;
  readonly clientPort: number;
  readonly serverAddress: string;
  readonly serverPort: number;
}

export type NonceCheck = "ok" | "replayed" | "full";
const WARM_KINDS: readonly WarmPacketKind[] = ["ourSyn", "peerSyn", "ourSynAck", "peerSynAck"];
const NONCE_CHECKS: readonly NonceCheck[] = ["ok", "replayed", "full"];

/** A decision the warm table made, for a flow record. */
export interface WarmFlow {
  readonly direction: "ingress" | "egress";
  readonly tuple: ConnectionTuple;
  readonly peerRef: number;
  readonly decisionRef: number;
  readonly timeMs: number;
}

/** A verdict the warm table gave to a packet handed to it directly (not through a queue). */
export interface WarmVerdict {
  readonly verdict: VerdictCode;
  readonly mark: number | undefined;
  readonly packet: Buffer | undefined;
  readonly kind: WarmPacketKind;
}

function tupleArgs(t: ConnectionTuple): TupleArgs {
  return [t.clientAddress, t.clientPort, t.serverAddress, t.serverPort];
}

/**
 * The fast path's warm handshakes in native code (native/src/warm_handshake.h): the enforcer teaches
 * it verified peers, servers with their pair keys and policy decisions, and the queues given it
 * decide warm handshakes from that without calling into JS. It also holds the per-connection state
 * both paths share: nonces sent, clients' nonces and the replay cache.
 */
export class WarmHandshakes {
  /** @internal the addon object, handed to the queues. */
  readonly native: NativeWarm;

  constructor(settings: WarmSettings) {
    this.native = new (load().WarmHandshakes)(settings);
  }

  /** This side's certificate section (as tokens carry it) and chain digest; voids peers, servers, decisions. */
  setLocal(chainSection: Buffer, digest: Buffer): void {
    this.native.setLocal(chainSection, digest);
  }

  learnServer(address: string, port: number, digest: Buffer, pairKey: Buffer): void {
    this.native.learnServer(address, port, digest, pairKey);
  }

  forgetServer(address: string, port: number): void {
    this.native.forgetServer(address, port);
  }

  /**
   * A peer whose chain (exactly these certificate-section bytes) verified for `purpose` (a client's
   * SYN or a server's SYN-ACK), until `validUntilMs`; it is taken for that purpose only.
   */
  rememberPeer(
    chainSection: Buffer,
    purpose: "client" | "server",
    digest: Buffer,
    ref: number,
    validUntilMs: number,
    pairKey: Buffer,
  ): void {
    this.native.rememberPeer(chainSection, purpose, digest, ref, validUntilMs, pairKey);
  }

  /** Policy's answer for this peer at this address and port, in one direction. */
  rememberDecision(
    direction: "ingress" | "egress",
    peerRef: number,
    peerAddress: string,
    port: number,
    allow: boolean,
    decisionRef: number,
  ): void {
    this.native.rememberDecision(
      direction === "ingress" ? 0 : 1,
      peerRef,
      peerAddress,
      port,
      allow,
      decisionRef,
    );
  }

  /** Forgets every peer (and so every decision): new trust. */
  forgetPeers(): void {
    this.native.forgetPeers();
  }

  /** Forgets every decision: new policy. */
  forgetDecisions(): void {
    this.native.forgetDecisions();
  }

  rememberNonce(nonce: Buffer, nowMs: number): NonceCheck {
    return NONCE_CHECKS[this.native.rememberNonce(nonce, nowMs)] as NonceCheck;
  }

  /** Nonces our SYN(s) for this connection carried, or null. */
  pendingOut(t: ConnectionTuple, nowMs: number): Buffer[] | null {
    return this.native.pendingOut(...tupleArgs(t), nowMs);
  }

  setPendingOut(t: ConnectionTuple, nonces: Buffer[], nowMs: number): void {
    this.native.setPendingOut(...tupleArgs(t), nonces, nowMs);
  }

  deletePendingOut(t: ConnectionTuple): void {
    this.native.deletePendingOut(...tupleArgs(t));
  }

  /** The accepted client's nonce and, when it proved itself by MAC, the pair key to answer in kind. */
  pendingIn(
    t: ConnectionTuple,
    nowMs: number,
  ): { clientNonce: Buffer; mac: { key: Buffer; keyId: Buffer } | null } | null {
    const p = this.native.pendingIn(...tupleArgs(t), nowMs);
    if (!p) return null;
    return { clientNonce: p[0], mac: p[1] && p[2] ? { key: p[1], keyId: p[2] } : null };
  }

  setPendingIn(
    t: ConnectionTuple,
    clientNonce: Buffer,
    mac: { key: Buffer; keyId: Buffer } | null,
    nowMs: number,
  ): void {
    this.native.setPendingIn(...tupleArgs(t), clientNonce, mac?.key ?? null, mac?.keyId ?? null, nowMs);
  }

  /** Decides a packet handed over directly (tests, benchmarks); null when it is JS's to decide. */
  handle(hook: number, mark: number, packet: Buffer, nowMs: number): WarmVerdict | null {
    const r = this.native.handle(hook, mark, packet, nowMs);
    if (!r) return null;
    return {
      verdict: r[0],
      mark: r[1] ?? undefined,
      packet: r[2] ?? undefined,
      kind: WARM_KINDS[r[3]] as WarmPacketKind,
    };
  }

  /** The decisions made since the last call, oldest first. */
  takeFlows(): WarmFlow[] {
    return this.native.takeFlows().map((f) => ({
      direction: f[0] === 0 ? "ingress" : "egress",
      tuple: { clientAddress: f[1], clientPort: f[2], serverAddress: f[3], serverPort: f[4] },
      peerRef: f[5],
      decisionRef: f[6],
      timeMs: f[7],
    }));
  }

  stats(): WarmStats {
    return this.native.stats();
  }
}
