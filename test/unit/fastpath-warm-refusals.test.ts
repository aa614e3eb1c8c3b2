/**
 * Warm tokens that must not pass: replays of SYNs and SYN-ACKs, tokens moved to another port, MACs
 * with a byte flipped, echoed nonces the client never sent, each refused with the reason JS would
 * give. The lab is `test/support/fastpath-warm-lab.ts`.
 */
import { describe, expect, it } from "vitest";
import { createPublicKey } from "node:crypto";
import { insertToken, parseTcp, TCP_FLAGS } from "../../native/index.ts";
import { MARK_DENY, MARK_PENDING_IN, MARK_REFUSED } from "../../sidecar/fastpath/marks.ts";
import { chainDigest, derivePairKey, encodeToken, newNonce } from "../../sidecar/fastpath/token.ts";
import {
  CLIENT,
  CLIENT_ADDRESS,
  db,
  EXID,
  HOOK_IN,
  Lab,
  markOf,
  nativeFlags,
  PORT,
  sent,
  SERVER,
  SERVER_ADDRESS,
  useWarmIdentities,
  web,
  WINDOW_MS,
  withLastByteFlipped,
  withSourcePort,
} from "../support/fastpath-warm-lab.ts";
import { segment } from "../e2e/fastpath-support/segments.ts";
import type { Given } from "../support/fastpath-warm-lab.ts";

useWarmIdentities();

describe("warm tokens that must not pass", () => {
  it("refuses a warm SYN replayed verbatim as replayed", async () => {
    const lab = new Lab();
    lab.accepted(40_201);
    const syn = lab.clientSyn(40_202);
    expect(syn.native).toBe(true);
    const first = lab.server.hand(HOOK_IN, sent(syn));
    expect(first.native).toBe(true);
    expect(markOf(first)).toBe(MARK_PENDING_IN);
    await lab.flows();

    const replay = lab.server.hand(HOOK_IN, sent(syn));
    expect(replay.native).toBe(false);
    expect(markOf(replay)).toBe(MARK_DENY);
    expect(lab.server.rejections()).toMatchObject({ replayed: 1 });
    const { server } = await lab.flows();
    expect(server).toHaveLength(1);
    expect(server[0]).toMatchObject({ verdict: "deny", reason: expect.stringMatching(/replayed/) });
  });

  it("remembers a nonce for as long as its token passes the window, both edges included", () => {
    const lab = new Lab();
    lab.accepted(40_251);
    // Accepted at the earliest moment the window allows (the token stamped a full window ahead) ...
    lab.client.skew = WINDOW_MS;
    const syn = lab.clientSyn(40_252);
    const first = lab.server.hand(HOOK_IN, sent(syn));
    expect([first.native, markOf(first)]).toEqual([true, MARK_PENDING_IN]);
    // ... and replayed at the last moment it still passes it (stamped a full window ago).
    lab.clock.ms += 2 * WINDOW_MS;
    const replay = lab.server.hand(HOOK_IN, sent(syn));
    expect([replay.native, markOf(replay)]).toEqual([false, MARK_DENY]);
    expect(lab.server.rejections()).toMatchObject({ replayed: 1 });
  });

  it("refuses a warm SYN's token moved onto another client port (bad-signature), and its nonce stays unspent", async () => {
    const lab = new Lab();
    lab.accepted(40_301);
    const syn = lab.clientSyn(40_302);
    const moved = lab.server.hand(HOOK_IN, withSourcePort(sent(syn), 40_399));
    expect(moved.native).toBe(false);
    expect(markOf(moved)).toBe(MARK_DENY);
    expect(lab.server.rejections()).toMatchObject({ "bad-signature": 1 });
    // The genuine SYN still passes, natively: a refused token does not burn its nonce.
    const genuine = lab.server.hand(HOOK_IN, sent(syn));
    expect(genuine.native).toBe(true);
    expect(markOf(genuine)).toBe(MARK_PENDING_IN);
  });

  it("refuses a warm SYN whose MAC has one byte flipped", () => {
    const lab = new Lab();
    lab.accepted(40_401);
    const syn = lab.clientSyn(40_402);
    const flipped = lab.server.hand(HOOK_IN, withLastByteFlipped(sent(syn)));
    expect(flipped.native).toBe(false);
    expect(markOf(flipped)).toBe(MARK_DENY);
    expect(lab.server.rejections()).toMatchObject({ "bad-signature": 1 });
  });

  it("refuses a warm SYN-ACK with a flipped MAC byte on the client", () => {
    const lab = new Lab();
    lab.accepted(40_451);
    const syn = lab.clientSyn(40_452);
    expect(markOf(lab.server.hand(HOOK_IN, sent(syn)))).toBe(MARK_PENDING_IN);
    const synAck = lab.serverSynAck(40_452);
    expect(synAck.native).toBe(true);
    const refused = lab.client.hand(HOOK_IN, withLastByteFlipped(sent(synAck)));
    expect(refused.native).toBe(false);
    expect(markOf(refused)).toBe(MARK_REFUSED);
    expect(parseTcp(sent(refused), EXID).flags & TCP_FLAGS.RST).toBe(TCP_FLAGS.RST);
    expect(lab.client.rejections()).toMatchObject({ "bad-signature": 1 });
  });

  it("refuses on the client a correctly MACed SYN-ACK whose echoed nonce is not one it sent", () => {
    const lab = new Lab();
    lab.accepted(40_501);
    const sport = 40_502;
    const syn = lab.clientSyn(sport);
    expect(syn.native).toBe(true);
    // The server's real key material: everything about this token is right but the echo.
    const webDigest = chainDigest(web.chain);
    const dbDigest = chainDigest(db.chain);
    const key = derivePairKey(db.privateKey, createPublicKey(web.privateKey), dbDigest, webDigest);
    const token = encodeToken(db, {
      type: "syn-ack",
      nonce: newNonce(),
      echoNonce: newNonce(),
      timestampMs: lab.clock.ms,
      tuple: {
        clientAddress: CLIENT_ADDRESS,
        clientPort: sport,
        serverAddress: SERVER_ADDRESS,
        serverPort: PORT,
      },
      mac: { key, keyId: Buffer.from(webDigest, "hex") },
    });
    const forged = insertToken(
      segment(SERVER, CLIENT, PORT, sport, TCP_FLAGS.SYN | TCP_FLAGS.ACK),
      token,
      EXID,
    );
    const refused = lab.client.hand(HOOK_IN, forged);
    expect(refused.native).toBe(false);
    expect(markOf(refused)).toBe(MARK_REFUSED);
    expect(lab.client.rejections()).toMatchObject({ "nonce-mismatch": 1 });
  });

  it("refuses a replayed warm SYN-ACK", async () => {
    const lab = new Lab();
    lab.accepted(40_601);
    const h = lab.accepted(40_602);
    expect(nativeFlags(h)).toEqual([true, true, true, true]);
    await lab.flows();
    const replay = lab.client.hand(HOOK_IN, sent(h.synAck as Given));
    expect(replay.native).toBe(false);
    expect(markOf(replay)).toBe(MARK_REFUSED);
    expect(parseTcp(sent(replay), EXID).flags & TCP_FLAGS.RST).toBe(TCP_FLAGS.RST);
    const { client } = await lab.flows();
    expect(client).toHaveLength(1);
    expect(client[0]).toMatchObject({ verdict: "deny", direction: "egress" });
  });

  it("refuses a warm SYN-ACK replayed into a new connection on the same 4-tuple", () => {
    const lab = new Lab();
    lab.accepted(40_651);
    const h = lab.accepted(40_652);
    // The same client port again: a new connection whose SYN carries a new nonce.
    const again = lab.clientSyn(40_652);
    expect(again.native).toBe(true);
    const replay = lab.client.hand(HOOK_IN, sent(h.synAck as Given));
    expect(replay.native).toBe(false);
    expect(markOf(replay)).toBe(MARK_REFUSED);
    expect(lab.client.rejections()).toMatchObject({ "nonce-mismatch": 1 });
  });
});
