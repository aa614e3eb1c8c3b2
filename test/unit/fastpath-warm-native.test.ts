/**
 * Warm handshakes decided in native code, checked against the JS path they stand in for: the first
 * handshake is JS's, later ones the warm table's (IPv4 and IPv6, per client port), with flow records
 * naming the peer and the deciding policy, and would-deny reported in observe mode. The lab is
 * `test/support/fastpath-warm-lab.ts`.
 */
import { describe, expect, it } from "vitest";
import type { FlowRecord } from "../../core/flow.ts";
import { parseTcp } from "../../native/index.ts";
import { MARK_PENDING_OUT } from "../../sidecar/fastpath/marks.ts";
import {
  ALLOW_POLICY,
  CLIENT_ADDRESS,
  db,
  DENY_POLICY,
  EXID,
  IPV6,
  KINDS,
  Lab,
  markOf,
  nativeFlags,
  policyState,
  PORT,
  sent,
  SERVER_ADDRESS,
  useWarmIdentities,
  web,
} from "../support/fastpath-warm-lab.ts";
import type { Given } from "../support/fastpath-warm-lab.ts";

useWarmIdentities();

describe("warm handshakes in native code", () => {
  it("decides the first handshake in JS and later ones natively, with flow records naming the peer and the decision", async () => {
    const lab = new Lab();
    const first = lab.accepted(40_001);
    expect(nativeFlags(first)).toEqual([false, false, false, false]);
    const cold = await lab.flows();
    expect(cold.server).toHaveLength(1);
    expect(cold.client).toHaveLength(1);

    const second = lab.accepted(40_002);
    expect(nativeFlags(second)).toEqual([true, true, true, true]);
    expect(markOf(second.syn)).toBe(MARK_PENDING_OUT);
    // The token is stripped before the segment reaches either socket.
    expect(parseTcp(sent(second.synIn), EXID)).toMatchObject({ hasToken: false, payloadLength: 0 });
    expect(parseTcp(sent(second.synAckIn as Given), EXID)).toMatchObject({
      hasToken: false,
      payloadLength: 0,
    });
    for (const kind of KINDS) {
      const side = kind === "ourSyn" || kind === "peerSynAck" ? lab.client : lab.server;
      expect(side.handled(kind), kind).toBe(1);
    }

    const warm = await lab.flows();
    expect(warm.server).toHaveLength(1);
    expect(warm.client).toHaveLength(1);
    const ingress = warm.server[0] as FlowRecord;
    const egress = warm.client[0] as FlowRecord;
    expect(ingress).toMatchObject({
      direction: "ingress",
      reporter: { spiffeId: db.identity.spiffeId, kind: "fastpath" },
      source: { spiffeId: web.identity.spiffeId, labels: web.identity.labels, address: CLIENT_ADDRESS },
      destination: { spiffeId: db.identity.spiffeId, address: SERVER_ADDRESS },
      port: PORT,
      verdict: "allow",
      wouldDeny: false,
      policy: (cold.server[0] as FlowRecord).policy,
      reason: (cold.server[0] as FlowRecord).reason,
      time: lab.clock.ms,
    });
    expect(ingress.policy).toMatch(/db-ingress/);
    expect(web.identity.labels).toMatchObject({ app: "web" });
    expect(egress).toMatchObject({
      direction: "egress",
      reporter: { spiffeId: web.identity.spiffeId, kind: "fastpath" },
      source: { spiffeId: web.identity.spiffeId, address: CLIENT_ADDRESS },
      destination: { spiffeId: db.identity.spiffeId, labels: db.identity.labels, address: SERVER_ADDRESS },
      port: PORT,
      verdict: "allow",
      policy: (cold.client[0] as FlowRecord).policy,
      reason: (cold.client[0] as FlowRecord).reason,
    });
    expect(lab.server.enforcer.stats().counters.macProofs).toBe(1);
    expect(lab.client.enforcer.stats().counters.macProofs).toBe(1);
  });

  it("over IPv6 too: tokens the warm table builds verify in JS on the other side, and the flow records carry IPv6 addresses", async () => {
    const lab = new Lab({ family: IPV6 });
    lab.accepted(40_051);
    expect(nativeFlags(lab.accepted(40_052))).toEqual([true, true, true, true]);
    // New policy on both sides: each verifies the other's natively built MAC token in JS.
    lab.server.enforcer.setPolicy(policyState(ALLOW_POLICY));
    lab.client.enforcer.setPolicy(policyState(ALLOW_POLICY));
    expect(nativeFlags(lab.accepted(40_053))).toEqual([true, false, true, false]);
    expect(lab.server.rejections()).toEqual({});
    expect(lab.client.rejections()).toEqual({});
    expect(nativeFlags(lab.accepted(40_054))).toEqual([true, true, true, true]);
    const { server } = await lab.flows();
    expect(server.map((f) => [f.source.address, f.destination.address])).toContainEqual([
      "2001:2::1",
      "2001:2::2",
    ]);
    expect(new Set(server.map((f) => f.source.address))).toEqual(new Set(["2001:2::1"]));
  });

  it("keeps the native decisions per client port: flow records carry each connection's 4-tuple", async () => {
    const lab = new Lab();
    lab.accepted(40_101);
    await lab.flows();
    lab.accepted(40_102);
    lab.accepted(40_103);
    const { server, client } = await lab.flows();
    expect(server.map((f) => [f.source.address, f.destination.address, f.port])).toEqual([
      [CLIENT_ADDRESS, SERVER_ADDRESS, PORT],
      [CLIENT_ADDRESS, SERVER_ADDRESS, PORT],
    ]);
    expect(client).toHaveLength(2);
    expect(lab.server.handled("peerSyn")).toBe(2);
  });
});

describe("observe mode", () => {
  it("reports would-deny for the natively decided handshakes that policy would deny", async () => {
    const lab = new Lab({ policy: DENY_POLICY, mode: "observe" });
    lab.accepted(42_001);
    const js = (await lab.flows()).server;
    expect(js[0]).toMatchObject({ verdict: "allow", wouldDeny: true });
    const h = lab.accepted(42_002);
    expect(nativeFlags(h)).toEqual([true, true, true, true]);
    const native = (await lab.flows()).server;
    expect(native).toHaveLength(1);
    expect(native[0]).toMatchObject({
      verdict: "allow",
      wouldDeny: true,
      policy: (js[0] as FlowRecord).policy,
      reason: (js[0] as FlowRecord).reason,
    });
  });
});
