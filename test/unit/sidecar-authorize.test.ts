import pino from "pino";
import { describe, expect, it } from "vitest";
import type { FlowRecord } from "../../core/flow.ts";
import type { CompiledPolicySet } from "../../core/policy/index.ts";
import { RevocationIndex } from "../../core/svid/revocation.ts";
import { Authorizer, reportedPath } from "../../sidecar/authz/authorize.ts";
import { denialCategory, refused } from "../../sidecar/authz/refusal.ts";
import { SidecarMetrics } from "../../sidecar/admin/metrics.ts";
import { PolicyHolder } from "../../sidecar/inputs/state.ts";
import { policySet } from "../support/sidecar-mesh.ts";

const self = {
  spiffeId: "spiffe://sigil.local/workload/api",
  trustDomain: "sigil.local",
  labels: { app: "api" },
  serial: "01",
  notAfter: new Date(Date.now() + 3_600_000),
};
const web = {
  kind: "workload" as const,
  identity: { ...self, spiffeId: "spiffe://sigil.local/workload/web", labels: { app: "web" } },
};
const conn = { direction: "ingress" as const, port: 8080, peer: web, encrypted: true };

function authorizer(
  policy: PolicyHolder,
  records: FlowRecord[] = [],
): { authz: Authorizer; metrics: SidecarMetrics } {
  const metrics = new SidecarMetrics();
  return {
    authz: new Authorizer(
      () => self,
      policy,
      { report: (r) => records.push(r) },
      metrics,
      pino({ level: "silent" }),
    ),
    metrics,
  };
}

describe("sidecar authorizer", () => {
  it("reads the policy at every decision", () => {
    const policy = new PolicyHolder({ trustDomain: "sigil.local" });
    const { authz } = authorizer(policy);
    const request = { method: "GET", path: "/a", headers: {} };
    expect(authz.decide(conn, request).verdict).toBe("deny");
    policy.update({
      policies: policySet(`
apiVersion: sigil.dev/v1
kind: AuthorizationPolicy
metadata: { name: p }
spec:
  selector: { matchLabels: { app: api } }
  ingress: [ { action: allow, from: [ { matchLabels: { app: web } } ], http: { paths: [ "/a" ] } } ]
`),
    });
    expect(authz.decide(conn, request)).toMatchObject({ verdict: "allow", policy: "p/ingress/0" });
  });

  it("fails closed when the engine throws", () => {
    const broken = {
      viewFor: () => {
        throw new Error("corrupt set");
      },
    } as unknown as CompiledPolicySet;
    const policy = new PolicyHolder({
      trustDomain: "sigil.local",
      policies: broken,
      revocations: RevocationIndex.empty("sigil.local"),
    });
    const { authz } = authorizer(policy);
    const decision = authz.decide(conn, { method: "GET", path: "/a", headers: {} });
    expect(decision.verdict).toBe("deny");
    expect(decision.reason).toMatch(/^internal-error: .*corrupt set/);
  });

  it("records a flow and counts a denial by reason", async () => {
    const records: FlowRecord[] = [];
    const { authz, metrics } = authorizer(new PolicyHolder({ trustDomain: "sigil.local" }), records);
    const decision = authz.decide(conn, { method: "GET", path: "/x", headers: {} });
    authz.record(conn, decision, {
      protocol: "http",
      http: { method: "GET", path: "/x", status: 403 },
      bytesSent: 10,
      bytesReceived: 0,
      startedAt: Date.now(),
    });
    expect(records[0]).toMatchObject({
      direction: "ingress",
      source: { spiffeId: web.identity.spiffeId, labels: { app: "web" } },
      destination: { spiffeId: self.spiffeId },
      verdict: "deny",
      encrypted: true,
      reporter: { spiffeId: self.spiffeId, kind: "sidecar" },
    });
    expect(await metrics.registry.getSingleMetricAsString("sigil_sidecar_denials_total")).toMatch(
      /reason="default-deny"\} 1/,
    );
  });

  it("counts every decision exactly across scrapes and gives each flow its own id", async () => {
    const records: FlowRecord[] = [];
    const { authz, metrics } = authorizer(new PolicyHolder({ trustDomain: "sigil.local" }), records);
    const decision = authz.decide(conn, { method: "GET", path: "/x", headers: {} });
    const outcome = { protocol: "http" as const, bytesSent: 0, bytesReceived: 0, startedAt: Date.now() };
    const allowed = { ...decision, verdict: "allow" as const };
    for (let i = 0; i < 3; i++) authz.record(conn, decision, outcome);
    authz.record(conn, allowed, outcome);
    const requests = (): Promise<string> =>
      metrics.registry.getSingleMetricAsString("sigil_sidecar_requests_total");
    expect(await requests()).toMatch(/direction="ingress",protocol="http",verdict="deny"\} 3/);
    expect(await requests()).toMatch(/verdict="allow"\} 1/);
    for (let i = 0; i < 2; i++) authz.record(conn, decision, outcome);
    authz.record({ ...conn, direction: "egress" }, allowed, { ...outcome, protocol: "tcp" });
    expect(await requests()).toMatch(/direction="ingress",protocol="http",verdict="deny"\} 5/);
    expect(await requests()).toMatch(/direction="egress",protocol="tcp",verdict="allow"\} 1/);
    expect(await metrics.registry.getSingleMetricAsString("sigil_sidecar_denials_total")).toMatch(
      /reason="default-deny"\} 5/,
    );
    expect(await metrics.registry.getSingleMetricAsString("sigil_sidecar_request_duration_seconds")).toMatch(
      /sigil_sidecar_request_duration_seconds_count\{direction="ingress",protocol="http"\} 6/,
    );
    // Another authorizer in the same process continues the same sequence: ids never repeat.
    const other = authorizer(new PolicyHolder({ trustDomain: "sigil.local" }), records);
    other.authz.record(conn, decision, outcome);
    const ids = records.map((r) => r.id);
    expect(new Set(ids).size).toBe(ids.length);
    for (const id of ids) expect(id).toMatch(/^[0-9a-f-]{36}-[0-9a-z]+$/);
    expect(new Set(ids.map((id) => id.slice(0, 36))).size).toBe(1);
  });

  it("names denial categories and reported paths without queries", () => {
    expect(
      denialCategory({
        verdict: "deny",
        wouldDeny: false,
        policy: null,
        reason: "x",
        logged: [],
        status: 400,
      }),
    ).toBe("malformed-request");
    expect(
      denialCategory({
        verdict: "deny",
        wouldDeny: false,
        policy: "p/ingress/0",
        reason: "denied",
        logged: [],
      }),
    ).toBe("policy");
    expect(denialCategory(refused({ kind: "mtls-required", port: 8080 }))).toBe("mtls-required");
    expect(
      denialCategory({
        verdict: "deny",
        wouldDeny: false,
        policy: null,
        reason: "no rule allows this ingress (default deny)",
        logged: [],
      }),
    ).toBe("default-deny");
    expect(
      reportedPath(
        { verdict: "allow", wouldDeny: false, policy: null, reason: "", logged: [] },
        "/a/./b?secret=1",
      ),
    ).toBe("/a/b");
  });
});
