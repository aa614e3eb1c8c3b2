/**
 * SYN-ACK handling. Our SYN-ACK (OUTPUT): insert a token bound to the client's nonce (by MAC when
 * the client proved itself by MAC against our current certificate). A peer's SYN-ACK (PREROUTING):
 * strip and verify its token against the nonces we sent, learn the server, evaluate egress policy,
 * accept or rewrite it into a RST for the local socket.
 */
import type { WorkloadIdentity } from "../../core/identity.ts";
import { refusalDecision } from "../../core/policy/index.ts";
import type { Decision } from "../../core/policy/index.ts";
import { VERDICT, insertToken, rewriteAsReset } from "../../native/index.ts";
import type { QueuedPacket, TcpInfo } from "../../native/index.ts";
import { countRejection } from "./enforcer-stats.ts";
import type { Answer, HandshakeContext } from "./handshake.ts";
import { dropSilently, extractFrom, synAckTuple, verifyPeer } from "./handshake.ts";
import { MARK_ACCEPTED, MARK_REFUSED, withMark } from "./marks.ts";
import { encodeToken, newNonce } from "./token.ts";

export function ourSynAck(ctx: HandshakeContext, answer: Answer, p: QueuedPacket, info: TcpInfo): void {
  const tuple = synAckTuple(info);
  const pending = ctx.warm.pendingIn(tuple, ctx.now());
  if (!pending || info.hasToken || info.payloadLength > 0) {
    // Without the client's nonce the answer cannot be bound; the client's SYN retransmission
    // brings a fresh one.
    dropSilently(ctx, answer, "no-state");
    return;
  }
  try {
    const token = encodeToken(ctx.current().local, {
      type: "syn-ack",
      nonce: newNonce(),
      echoNonce: pending.clientNonce,
      timestampMs: ctx.now(),
      tuple,
      ...(pending.mac ? { mac: pending.mac } : {}),
    });
    const packet = insertToken(p.packet, token, ctx.exid);
    ctx.counters.synAckSigned++;
    answer.give(VERDICT.ACCEPT, undefined, packet);
  } catch {
    dropSilently(ctx, answer, "token-too-large");
  }
}

export function peerSynAck(ctx: HandshakeContext, answer: Answer, p: QueuedPacket, info: TcpInfo): void {
  const tuple = synAckTuple(info);
  const pending = ctx.warm.pendingOut(tuple, ctx.now());
  const refuse = (identity: WorkloadIdentity | null, decision: Decision): void => {
    ctx.counters.synAckRefused++;
    answer.give(VERDICT.ACCEPT, withMark(p.mark, MARK_REFUSED), rewriteAsReset(p.packet));
    ctx.warm.deletePendingOut(tuple);
    ctx.flow("egress", tuple, identity, decision);
  };
  const accept = (identity: WorkloadIdentity | null, decision: Decision, stripped?: Buffer): void => {
    ctx.counters.synAckAccepted++;
    ctx.warm.deletePendingOut(tuple);
    answer.give(VERDICT.ACCEPT, withMark(p.mark, MARK_ACCEPTED), stripped);
    ctx.flow("egress", tuple, identity, decision);
  };
  const extracted = extractFrom(ctx, p.packet);
  if (extracted === "malformed") {
    countRejection(ctx.counters, "malformed");
    refuse(null, refusalDecision("SYN-ACK token option malformed"));
    return;
  }
  if (extracted === null) {
    const decision = ctx.decide("egress", { kind: "external", address: info.src }, info.srcPort);
    if (decision.verdict === "allow" && info.payloadLength === 0) {
      accept(null, decision);
      return;
    }
    countRejection(ctx.counters, "policy");
    refuse(
      null,
      decision.verdict === "allow"
        ? refusalDecision("SYN-ACK carries data without a token option")
        : decision,
    );
    return;
  }
  const checked = verifyPeer(ctx, extracted.token, "syn-ack", tuple, pending ?? [], (verified) => {
    if (ctx.knownServer(info.src, info.srcPort)?.digest !== verified.digest) {
      ctx.serverLearned({
        address: info.src,
        port: info.srcPort,
        digest: verified.digest,
        publicKeyDer: verified.publicKey.export({ type: "spki", format: "der" }),
      });
    }
    ctx.knowServer(info.src, info.srcPort, verified.digest, verified.publicKey);
    return { identity: verified.identity, peerRef: ctx.teachPeer(verified) };
  });
  if (!checked.ok) {
    refuse(null, refusalDecision(`SYN-ACK token rejected (${checked.refused}): ${checked.message}`));
    return;
  }
  const { identity, peerRef } = checked.value;
  const decision = ctx.decideTaught("egress", peerRef, identity, info.src, info.srcPort);
  if (decision.verdict !== "allow") {
    countRejection(ctx.counters, "policy");
    refuse(identity, decision);
    return;
  }
  accept(identity, decision, extracted.packet);
}
