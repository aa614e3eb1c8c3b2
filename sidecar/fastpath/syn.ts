/**
 * SYN handling. Our SYN (OUTPUT): sign a token for the 4-tuple (by MAC to a server we verified
 * before), insert it, remember the nonce. A peer's SYN (PREROUTING): strip and verify its token (or
 * treat a token-less peer as external, matched by address), evaluate ingress policy, accept with a
 * mark or refuse (the rules reset it).
 */
import type { WorkloadIdentity } from "../../core/identity.ts";
import { refusalDecision } from "../../core/policy/index.ts";
import type { Decision } from "../../core/policy/index.ts";
import { VERDICT, insertToken } from "../../native/index.ts";
import type { QueuedPacket, TcpInfo } from "../../native/index.ts";
import { countRejection } from "./enforcer-stats.ts";
import type { Answer, HandshakeContext } from "./handshake.ts";
import { extractFrom, synTuple, verifyPeer } from "./handshake.ts";
import { MARK_ACCEPTED, MARK_DENY, MARK_PENDING_IN, MARK_PENDING_OUT, withMark } from "./marks.ts";
import { encodeToken, newNonce } from "./token.ts";
import type { FourTuple } from "./token.ts";

const MAX_NONCES_PER_CONNECTION = 8;

export function ourSyn(ctx: HandshakeContext, answer: Answer, p: QueuedPacket, info: TcpInfo): void {
  const tuple = synTuple(info);
  if (info.hasToken || info.payloadLength > 0) {
    // Only this enforcer puts tokens on SYNs; a local SYN that already has one (or data) is not ours to sign.
    ctx.counters.malformedPackets++;
    answer.give(VERDICT.ACCEPT, withMark(p.mark, MARK_DENY));
    return;
  }
  const nonce = newNonce();
  const previous = ctx.warm.pendingOut(tuple, ctx.now());
  // A retransmitted SYN may mean the server could not check our MAC (it lost the key we derived
  // against): forget what we knew and prove ourselves with a signature this time.
  if (previous) ctx.forgetServer(info.dst, info.dstPort);
  const known = ctx.knownServer(info.dst, info.dstPort);
  let packet: Buffer;
  try {
    const current = ctx.current();
    const pairKey = known ? ctx.pairKey(current.digest, known.digest, known.publicKey) : null;
    if (known && pairKey) {
      ctx.warm.learnServer(info.dst, info.dstPort, Buffer.from(known.digest, "hex"), pairKey);
    }
    const token = encodeToken(current.local, {
      type: "syn",
      nonce,
      timestampMs: ctx.now(),
      tuple,
      ...(known && pairKey ? { mac: { key: pairKey, keyId: Buffer.from(known.digest, "hex") } } : {}),
    });
    packet = insertToken(p.packet, token, ctx.exid);
  } catch (err) {
    countRejection(ctx.counters, "token-too-large");
    answer.give(VERDICT.ACCEPT, withMark(p.mark, MARK_DENY));
    ctx.flow("egress", tuple, null, {
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
  ctx.warm.setPendingOut(tuple, nonces, ctx.now());
  ctx.counters.synSigned++;
  answer.give(VERDICT.ACCEPT, withMark(p.mark, MARK_PENDING_OUT), packet);
}

export function peerSyn(ctx: HandshakeContext, answer: Answer, p: QueuedPacket, info: TcpInfo): void {
  const tuple = synTuple(info);
  const extracted = extractFrom(ctx, p.packet);
  if (extracted === "malformed") {
    ctx.counters.malformedPackets++;
    countRejection(ctx.counters, "malformed");
    answer.give(VERDICT.ACCEPT, withMark(p.mark, MARK_DENY));
    return;
  }
  if (extracted === null) {
    if (info.payloadLength > 0) {
      // Data on a SYN without our option: not a token handshake we understand (e.g. TFO); refuse.
      countRejection(ctx.counters, "malformed");
      answer.give(VERDICT.ACCEPT, withMark(p.mark, MARK_DENY));
      ctx.flow("ingress", tuple, null, refusalDecision("SYN carries data without a token option"));
      return;
    }
    const decision = ctx.decide("ingress", { kind: "external", address: info.src }, info.dstPort);
    finishSyn(ctx, answer, p, tuple, null, decision, MARK_ACCEPTED, undefined);
    return;
  }
  const checked = verifyPeer(ctx, extracted.token, "syn", tuple, undefined, (verified) => {
    let mac: { key: Buffer; keyId: Buffer } | null = null;
    const peerRef = ctx.teachPeer(verified);
    const current = ctx.current();
    // Answer a MAC in kind only if it was made against our current certificate, the one our
    // SYN-ACK carries; otherwise a signature, which also teaches the client our new certificate.
    if (verified.token.proofKind === "mac" && verified.token.keyId?.toString("hex") === current.digest) {
      const key = ctx.pairKey(current.digest, verified.digest, verified.publicKey);
      if (key) mac = { key, keyId: Buffer.from(verified.digest, "hex") };
    }
    return { identity: verified.identity, nonce: Buffer.from(verified.token.nonce), mac, peerRef };
  });
  if (!checked.ok) {
    if (checked.refused === "unknown-key") {
      // The client derived its MAC against a key we no longer hold (we restarted or rotated):
      // stay silent rather than reset, so its SYN retransmission comes signed and succeeds.
      answer.give(VERDICT.DROP);
      return;
    }
    // Stripped, so the RST the rules send acknowledges exactly the SYN (ISN + 1) and the client's
    // stack accepts it; with the token still attached the RST would acknowledge the token bytes too.
    answer.give(VERDICT.ACCEPT, withMark(p.mark, MARK_DENY), extracted.packet);
    ctx.counters.synDenied++;
    ctx.flow(
      "ingress",
      tuple,
      null,
      refusalDecision(`token rejected (${checked.refused}): ${checked.message}`),
    );
    return;
  }
  const { identity, nonce, mac, peerRef } = checked.value;
  const decision = ctx.decideTaught("ingress", peerRef, identity, info.src, info.dstPort);
  finishSyn(ctx, answer, p, tuple, identity, decision, MARK_PENDING_IN, extracted.packet, { nonce, mac });
}

function finishSyn(
  ctx: HandshakeContext,
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
    if (client) ctx.warm.setPendingIn(tuple, client.nonce, client.mac, ctx.now());
    ctx.counters.synAccepted++;
    answer.give(VERDICT.ACCEPT, withMark(p.mark, acceptMark), stripped);
  } else {
    countRejection(ctx.counters, "policy");
    ctx.counters.synDenied++;
    answer.give(VERDICT.ACCEPT, withMark(p.mark, MARK_DENY), stripped);
  }
  ctx.flow("ingress", tuple, identity, decision);
}
