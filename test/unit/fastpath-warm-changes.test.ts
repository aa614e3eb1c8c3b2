/**
 * What JS changes reaches the warm table at once: policy both ways, a new revocation list, expired
 * certificates, the token window's edges, and rotations of either side's certificate, including one
 * in the middle of a handshake. The lab is `test/support/fastpath-warm-lab.ts`.
 */
import { describe, expect, it } from "vitest";
import type { FlowRecord } from "../../core/flow.ts";
import { RevocationIndex } from "../../core/svid/revocation.ts";
import { extractToken, parseTcp, TCP_FLAGS, VERDICT } from "../../native/index.ts";
import { MARK_ACCEPTED, MARK_DENY, MARK_PENDING_IN, MARK_REFUSED } from "../../sidecar/fastpath/marks.ts";
import { decodeToken } from "../../sidecar/fastpath/token.ts";
import { TRUST_DOMAIN } from "../e2e/fastpath-support/pki.ts";
import {
  ALLOW_POLICY,
  bundle,
  DENY_POLICY,
  EXID,
  HOOK_IN,
  identity,
  Lab,
  markOf,
  nativeFlags,
  policyState,
  rotatedDb,
  rotatedWeb,
  sent,
  useWarmIdentities,
  web,
  WEB_EGRESS_DENY,
  WINDOW_MS,
} from "../support/fastpath-warm-lab.ts";
import type { Given } from "../support/fastpath-warm-lab.ts";

useWarmIdentities();

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
