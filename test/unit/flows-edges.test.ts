import { describe, expect, it } from "vitest";
import type { FlowRecord } from "../../core/flow.ts";
import { EdgeAggregator } from "../../controlplane/flows/edges.ts";
import type { Edge } from "../../controlplane/flows/edges.ts";
import { edgeStatus } from "../../controlplane/visibility/routes.ts";
import { demo, demoTraffic, flow, UNRESTRICTED_EGRESS } from "../support/flows-fixtures.ts";

function aggregate(records: readonly FlowRecord[]): EdgeAggregator {
  const edges = new EdgeAggregator();
  for (const r of records) edges.add(r);
  return edges;
}

const key = (from: { spiffeId: string }, to: { spiffeId: string }, port: number) =>
  `${from.spiffeId} -> ${to.spiffeId}:${port}`;

function counts(e: Edge | undefined) {
  if (!e) throw new Error("edge missing");
  return { allowed: e.allowed, denied: e.denied, wouldDeny: e.wouldDeny, status: edgeStatus(e) };
}

describe("edges count each request once", () => {
  it("counts the demo's requests once although both sidecars report them", () => {
    const edges = aggregate(demoTraffic());
    const webApi = edges.get(key(demo.web, demo.api, 8080))!;
    expect(counts(webApi)).toEqual({ allowed: 6, denied: 0, wouldDeny: 0, status: "allowed" });
    expect(webApi).toMatchObject({
      reports: { caller: 6, callee: 6 },
      countedFrom: "callee",
      encrypted: 6,
      plaintext: 0,
      methods: { GET: 5, POST: 1 },
      lastPolicy: "demo-allow/ingress/0",
    });
    expect(counts(edges.get(key(demo.api, demo.db, 5432)))).toMatchObject({ allowed: 2, denied: 0 });
    const total = edges.list().reduce((n, e) => n + e.allowed + e.denied + e.wouldDeny, 0);
    expect(total).toBe(6 + 2 + 2 + 1);
  });

  it("shows the rogue's edge as denied: its own egress allow is not a second request", () => {
    const edges = aggregate(demoTraffic());
    const rogueApi = edges.get(key(demo.rogue, demo.api, 8080))!;
    expect(counts(rogueApi)).toEqual({ allowed: 0, denied: 2, wouldDeny: 0, status: "denied" });
    expect(rogueApi).toMatchObject({
      reports: { caller: 2, callee: 2 },
      lastVerdict: "deny",
      lastPolicy: null,
      lastReason: "no policy allows this (default deny)",
    });
    expect(counts(edges.get(key(demo.rogue, demo.db, 5432)))).toEqual({
      allowed: 0,
      denied: 1,
      wouldDeny: 0,
      status: "denied",
    });
  });

  it("decides the same whichever report arrives first, even at the same millisecond", () => {
    const spec = { from: demo.rogue, to: demo.api, port: 8080, http: { method: "GET", path: "/x" }, time: 5 };
    const egress = flow({ ...spec, direction: "egress", policy: null, reason: UNRESTRICTED_EGRESS });
    const ingress = flow({ ...spec, verdict: "deny" });
    for (const order of [
      [egress, ingress],
      [ingress, egress],
    ]) {
      const e = aggregate(order).get(key(demo.rogue, demo.api, 8080))!;
      expect(counts(e).status).toBe("denied");
      expect(e.lastReason).toBe("no policy allows this (default deny)");
    }
  });

  it("counts a request the caller's proxy stopped, which the callee never saw", () => {
    const stopped = flow({
      from: demo.web,
      to: demo.api,
      port: 8080,
      http: { method: "GET", path: "/admin/users" },
      direction: "egress",
      verdict: "deny",
      policy: null,
      time: Date.now() + 1_000,
    });
    const e = aggregate([...demoTraffic(), stopped]).get(key(demo.web, demo.api, 8080))!;
    expect(counts(e)).toEqual({ allowed: 6, denied: 1, wouldDeny: 0, status: "mixed" });
    expect(e.paths["/admin/users"]).toBe(1);
    expect(e.lastVerdict).toBe("deny");
  });

  it("turns a callee's allow into a denial when the caller's fast path refused the SYN-ACK", () => {
    const spec = { from: demo.api, to: demo.db, port: 5432 };
    const e = aggregate([
      flow({ ...spec, time: 10 }),
      flow({ ...spec, direction: "egress", verdict: "deny", policy: "api-egress/egress/0", time: 11 }),
    ]).get(key(demo.api, demo.db, 5432))!;
    expect(counts(e)).toEqual({ allowed: 0, denied: 1, wouldDeny: 0, status: "denied" });
    expect(e.lastPolicy).toBe("api-egress/egress/0");
  });

  it("marks a request the caller's observe mode would have refused as would-deny", () => {
    const spec = { from: demo.web, to: demo.api, port: 8080, http: { method: "GET", path: "/api/x" } };
    const e = aggregate([
      flow({ ...spec, direction: "egress", wouldDeny: true, policy: null, time: 1 }),
      flow({ ...spec, time: 2 }),
    ]).get(key(demo.web, demo.api, 8080))!;
    expect(counts(e)).toEqual({ allowed: 0, denied: 0, wouldDeny: 1, status: "would-deny" });
  });

  it("falls back to the side that reported when the other did not", () => {
    const spec = { from: demo.web, to: demo.api, port: 8080, http: { method: "GET", path: "/api/y" } };
    const callerOnly = aggregate([
      flow({ ...spec, direction: "egress", policy: "web-egress/egress/0", time: 1 }),
      flow({ ...spec, direction: "egress", policy: "web-egress/egress/0", time: 2 }),
    ]).get(key(demo.web, demo.api, 8080))!;
    expect(counts(callerOnly)).toMatchObject({ allowed: 2, status: "allowed" });
    expect(callerOnly).toMatchObject({ countedFrom: "caller", lastPolicy: "web-egress/egress/0" });
    const calleeOnly = aggregate([flow({ ...spec, time: 1 })]).get(key(demo.web, demo.api, 8080))!;
    expect(counts(calleeOnly)).toMatchObject({ allowed: 1, status: "allowed" });
    expect(calleeOnly.countedFrom).toBe("callee");
  });

  it("takes records back out exactly when retention drops them", () => {
    const records = demoTraffic();
    const edges = aggregate(records);
    const rogueApi = records.filter((r) => r.source.labels.app === "rogue" && r.port === 8080);
    // Retention drops the api's refusals first: only the rogue's own egress reports are left.
    const refusals = rogueApi.filter((r) => r.direction === "ingress");
    for (const r of refusals) edges.remove(r);
    expect(counts(edges.get(key(demo.rogue, demo.api, 8080)))).toMatchObject({ allowed: 2, denied: 0 });
    for (const r of records) if (!refusals.includes(r)) edges.remove(r);
    expect(edges.list()).toEqual([]);
  });
});
