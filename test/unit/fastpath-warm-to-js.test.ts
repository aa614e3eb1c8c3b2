/**
 * What the warm table leaves to JS: a known peer at an address or port JS has not decided, a server
 * a new revocation list names, SYN retransmissions, a chain verified for the other purpose, nonces
 * JS accepted, and every single-bit change of a warm token (each refused by JS). The lab is
 * `test/support/fastpath-warm-lab.ts`.
 */
import { describe, expect, it } from "vitest";
import { createPublicKey } from "node:crypto";
import { RevocationIndex } from "../../core/svid/revocation.ts";
import { extractToken, TCP_FLAGS, VERDICT } from "../../native/index.ts";
import { MARK_ACCEPTED, MARK_DENY, MARK_PENDING_IN, MARK_REFUSED } from "../../sidecar/fastpath/marks.ts";
import { chainDigest, decodeToken } from "../../sidecar/fastpath/token.ts";
import { TRUST_DOMAIN } from "../e2e/fastpath-support/pki.ts";
import {
  ALLOW_POLICY,
  bundle,
  CLIENT,
  CLIENT_ADDRESS,
  db,
  EXID,
  HOOK_IN,
  HOOK_OUT,
  Lab,
  markOf,
  nativeFlags,
  policyState,
  PORT,
  sent,
  SERVER,
  SERVER_ADDRESS,
  useWarmIdentities,
} from "../support/fastpath-warm-lab.ts";
import { segment } from "../e2e/fastpath-support/segments.ts";
import type { Given } from "../support/fastpath-warm-lab.ts";

useWarmIdentities();

describe("the warm table leaves to JS", () => {
  it("a known peer from another address, or to another port, until JS has decided that pair", async () => {
    const lab = new Lab();
    lab.accepted(43_001);
    const elsewhere = { client: [198, 18, 0, 3] };
    const fromElsewhere = lab.accepted(43_002, elsewhere);
    expect(fromElsewhere.synIn.native).toBe(false);
    expect(nativeFlags(lab.accepted(43_003, elsewhere))).toEqual([true, true, true, true]);

    // Another port of the same server, learned from a sibling worker: the client proves itself by MAC there too.
    lab.client.enforcer.learnServer({
      address: SERVER_ADDRESS,
      port: PORT + 1,
      digest: chainDigest(db.chain),
      publicKeyDer: createPublicKey(db.privateKey).export({ type: "spki", format: "der" }),
    });
    const otherPort = { port: PORT + 1 };
    const first = lab.handshake(43_004, otherPort);
    expect([first.syn.native, first.synIn.native, markOf(first.synIn)]).toEqual([true, false, MARK_DENY]);
    const again = lab.handshake(43_005, otherPort);
    expect([again.synIn.native, markOf(again.synIn)]).toEqual([true, MARK_DENY]);
    const { server } = await lab.flows();
    // Records of the warm table's decisions are reported ahead of JS's: compare them as a set.
    const seen = server.map((f) => `${f.source.address} ${f.port} ${f.verdict}`).sort();
    expect(seen).toEqual(
      [
        `${CLIENT_ADDRESS} ${PORT + 1} deny`,
        `${CLIENT_ADDRESS} ${PORT + 1} deny`,
        `${CLIENT_ADDRESS} ${PORT} allow`,
        `198.18.0.3 ${PORT} allow`,
        `198.18.0.3 ${PORT} allow`,
      ].sort(),
    );
  });

  it("a SYN-ACK from a server the client's new revocation list names", () => {
    const lab = new Lab();
    lab.accepted(43_101);
    lab.accepted(43_102);
    lab.client.enforcer.setTrust({
      bundle,
      revocations: new RevocationIndex({
        trustDomain: TRUST_DOMAIN,
        sequence: 1,
        entries: [
          {
            spiffeId: db.identity.spiffeId,
            revokedAtMs: lab.clock.ms,
            expiresAtMs: lab.clock.ms + 3_600_000,
            reason: "decommissioned",
          },
        ],
      }),
    });
    const h = lab.handshake(43_103);
    expect(h.synAckIn?.native).toBe(false);
    expect(markOf(h.synAckIn as Given)).toBe(MARK_REFUSED);
    expect(lab.client.rejections()).toMatchObject({ revoked: 1 });
  });

  it("a SYN retransmission (signed by JS); either SYN's answer then completes the handshake", () => {
    for (const answered of ["first", "retransmission"] as const) {
      const lab = new Lab();
      lab.accepted(43_201);
      const sport = 43_202;
      const first = lab.clientSyn(sport);
      expect(first.native).toBe(true);
      const retransmission = lab.clientSyn(sport);
      expect(retransmission.native).toBe(false);
      expect(
        decodeToken((extractToken(sent(retransmission), EXID) as { token: Buffer }).token).proofKind,
      ).toBe("signature");
      const synIn = lab.server.hand(HOOK_IN, sent(answered === "first" ? first : retransmission));
      expect(markOf(synIn)).toBe(MARK_PENDING_IN);
      const synAckIn = lab.client.hand(HOOK_IN, sent(lab.serverSynAck(sport)));
      expect(markOf(synAckIn), answered).toBe(MARK_ACCEPTED);
    }
  });

  it("a chain verified as a server's is verified again before it counts as a client's", () => {
    const lab = new Lab();
    lab.accepted(40_700);
    const web = lab.client.enforcer;
    const cold = web.stats().counters.coldVerifications;
    // db, the server web verified in that SYN-ACK, now connects to web as a client.
    const syn = lab.server.hand(HOOK_OUT, segment(SERVER, CLIENT, 40_701, PORT, TCP_FLAGS.SYN));
    const synIn = lab.client.hand(HOOK_IN, sent(syn));
    expect(synIn.native).toBe(false);
    expect(web.stats().counters.coldVerifications).toBe(cold + 1);
  });

  it("a nonce JS accepted is a replay to the warm table too", () => {
    const lab = new Lab();
    lab.accepted(43_301);
    lab.accepted(43_302);
    // New policy: the next warm SYN is verified and decided by JS, which teaches the decision.
    lab.server.enforcer.setPolicy(policyState(ALLOW_POLICY));
    const syn = lab.clientSyn(43_303);
    const byJs = lab.server.hand(HOOK_IN, sent(syn));
    expect([byJs.native, markOf(byJs)]).toEqual([false, MARK_PENDING_IN]);
    expect(lab.server.enforcer.stats().counters.macProofs).toBe(2);
    const replay = lab.server.hand(HOOK_IN, sent(syn));
    expect([replay.native, markOf(replay)]).toEqual([false, MARK_DENY]);
    expect(lab.server.rejections()).toMatchObject({ replayed: 1 });
  });

  it("every single-bit change of a warm SYN's token (and JS refuses each)", () => {
    const lab = new Lab();
    lab.accepted(43_401);
    const syn = sent(lab.clientSyn(43_402));
    const { token } = extractToken(syn, EXID) as { token: Buffer };
    const tokenAt = syn.length - token.length;
    for (let i = tokenAt; i < syn.length; i++) {
      const mutated = Buffer.from(syn);
      mutated[i] = (mutated[i] as number) ^ (1 << (i % 8));
      const g = lab.server.hand(HOOK_IN, mutated);
      expect(g.native, `token byte ${i - tokenAt}`).toBe(false);
      // Refused: reset, or dropped when the key id names no key of ours (the client's retransmission comes signed).
      const refused = markOf(g) === MARK_DENY || (g.verdict === VERDICT.DROP && g.mark === undefined);
      expect(refused, `token byte ${i - tokenAt}`).toBe(true);
    }
    const genuine = lab.server.hand(HOOK_IN, syn);
    expect([genuine.native, markOf(genuine)]).toEqual([true, MARK_PENDING_IN]);
  });

  it("every single-bit change of a warm SYN-ACK's token (and JS refuses each)", () => {
    const lab = new Lab();
    lab.accepted(43_501);
    let tokenLength = 0;
    for (let i = 0; tokenLength === 0 || i < tokenLength; i++) {
      const sport = 44_000 + i;
      expect(markOf(lab.server.hand(HOOK_IN, sent(lab.clientSyn(sport))))).toBe(MARK_PENDING_IN);
      const synAck = sent(lab.serverSynAck(sport));
      tokenLength = (extractToken(synAck, EXID) as { token: Buffer }).token.length;
      const at = synAck.length - tokenLength + i;
      const mutated = Buffer.from(synAck);
      mutated[at] = (mutated[at] as number) ^ (1 << (i % 8));
      const g = lab.client.hand(HOOK_IN, mutated);
      expect([g.native, markOf(g)], `token byte ${i}`).toEqual([false, MARK_REFUSED]);
    }
    expect(nativeFlags(lab.accepted(43_502))).toEqual([true, true, true, true]);
  });
});
