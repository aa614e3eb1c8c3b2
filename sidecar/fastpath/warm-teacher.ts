/**
 * The enforcer's side of the native warm table (native/src/warm_handshake.cc): after JS verified a
 * peer and decided policy for it, the table is taught both, so it can decide the next such
 * handshake itself. The table speaks in refs; this keeps what they stand for (the peer's identity,
 * the decision), so the flows it decided become flow records naming them. Both lists are bounded:
 * past their limit, the table starts afresh.
 */
import type { WorkloadIdentity } from "../../core/identity.ts";
import { refusalDecision } from "../../core/policy/index.ts";
import type { Decision } from "../../core/policy/index.ts";
import type { WarmFlow, WarmHandshakes } from "../../native/index.ts";
import type { UnreportedFlow } from "./flow-record.ts";
import type { VerifiedToken } from "./verifier.ts";

/** Peers and decisions taught to the warm table before it starts afresh (their refs stay bounded). */
const MAX_TAUGHT_PEERS = 4096;
const MAX_TAUGHT_DECISIONS = 65_536;

export class WarmTeacher {
  /** Refs of the peers taught, by chain digest. */
  private readonly peerRefs = new Map<string, number>();
  private peers: WorkloadIdentity[] = [];
  private decisions: Decision[] = [];

  constructor(
    readonly table: WarmHandshakes,
    /** Runs before anything is forgotten: the flows decided with it must be reported first. */
    private readonly beforeForget: () => void,
  ) {}

  /** Teaches a peer JS verified (with the pair key, when there is one); returns its ref. */
  teachPeer(verified: VerifiedToken, pairKey: Buffer | null): number {
    let ref = this.peerRefs.get(verified.digest);
    if (ref === undefined) {
      if (this.peers.length >= MAX_TAUGHT_PEERS) this.forget("peers");
      ref = this.peers.push(verified.identity) - 1;
      this.peerRefs.set(verified.digest, ref);
    }
    if (pairKey) {
      this.table.rememberPeer(
        verified.token.chainBytes,
        verified.token.type === "syn" ? "client" : "server",
        Buffer.from(verified.digest, "hex"),
        ref,
        verified.validUntilMs,
        pairKey,
      );
    }
    return ref;
  }

  /** Teaches the policy decision JS made for a taught peer at this address and port. */
  teachDecision(
    direction: "ingress" | "egress",
    peerRef: number,
    address: string,
    port: number,
    decision: Decision,
  ): void {
    if (this.decisions.length >= MAX_TAUGHT_DECISIONS) this.forget("decisions");
    const decisionRef = this.decisions.push(decision) - 1;
    this.table.rememberDecision(direction, peerRef, address, port, decision.verdict === "allow", decisionRef);
  }

  /**
   * Drops what the table was taught — "peers" (and with them every decision) or "decisions" only —
   * once the flow records of what it decided with them are out.
   */
  forget(what: "peers" | "decisions"): void {
    this.beforeForget();
    if (what === "peers") {
      this.table.forgetPeers();
      this.peerRefs.clear();
      this.peers = [];
    } else {
      this.table.forgetDecisions();
    }
    this.decisions = [];
  }

  /** A flow the table decided, with the identity and decision its refs stand for. */
  flowOf(f: WarmFlow, local: WorkloadIdentity): UnreportedFlow {
    return {
      direction: f.direction,
      tuple: f.tuple,
      peer: this.peers[f.peerRef] ?? null,
      decision: this.decisions[f.decisionRef] ?? refusalDecision("decision no longer known (internal error)"),
      time: f.timeMs,
      local,
    };
  }
}
