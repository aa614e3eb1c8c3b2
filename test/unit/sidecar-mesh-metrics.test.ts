import pino from "pino";
import { describe, expect, it } from "vitest";
import type { Decision } from "../../core/policy/index.ts";
import { SidecarMetrics } from "../../sidecar/admin/metrics.ts";
import { Authorizer } from "../../sidecar/authz/authorize.ts";
import type { ConnectionFacts } from "../../sidecar/authz/authorize.ts";
import { PolicyHolder } from "../../sidecar/inputs/state.ts";

/** The mesh's standard request and connection metrics, as an Authorizer records them. */

const self = {
  spiffeId: "spiffe://sigil.local/ns/shop/sa/api",
  trustDomain: "sigil.local",
  labels: { app: "api" },
  serial: "01",
  notAfter: new Date(Date.now() + 3_600_000),
};

function workload(name: string): ConnectionFacts["peer"] {
  return {
    kind: "workload",
    identity: { ...self, spiffeId: `spiffe://sigil.local/workload/${name}`, labels: { app: name } },
  };
}

const allow: Decision = {
  verdict: "allow",
  wouldDeny: false,
  policy: "shop/ingress/0",
  reason: "",
  logged: [],
};
const deny: Decision = {
  verdict: "deny",
  wouldDeny: false,
  policy: null,
  reason: "default-deny",
  logged: [],
};
const wouldDeny: Decision = { ...allow, policy: "shop/ingress/1", wouldDeny: true };

function setUp(maxLabelSets?: number): { authz: Authorizer; metrics: SidecarMetrics } {
  const metrics = new SidecarMetrics(maxLabelSets === undefined ? {} : { maxLabelSets });
  const policy = new PolicyHolder({ trustDomain: "sigil.local" });
  const authz = new Authorizer(
    () => self,
    policy,
    { report: () => undefined },
    metrics,
    pino({ level: "silent" }),
  );
  return { authz, metrics };
}

const ingress = (peer: ConnectionFacts["peer"]): ConnectionFacts => ({
  direction: "ingress",
  port: 8080,
  peer,
  encrypted: true,
});

async function family(metrics: SidecarMetrics, name: string): Promise<string> {
  return metrics.registry.getSingleMetricAsString(name);
}

describe("mesh metrics", () => {
  it("labels requests with Istio's names: both ends, principals, code, policy, security, reporter", async () => {
    const { authz, metrics } = setUp();
    const web = ingress(workload("web"));
    const http = (status: number) => ({
      protocol: "http" as const,
      http: { method: "GET", path: "/", status },
      bytesSent: 300,
      bytesReceived: 20,
      startedAt: Date.now(),
    });
    authz.record(web, allow, http(200));
    authz.record(web, allow, http(200));
    authz.record(web, deny, http(403));
    authz.record(web, wouldDeny, http(200));
    const text = await family(metrics, "sigil_requests_total");
    expect(text).toContain("# TYPE sigil_requests_total counter");
    const common =
      'reporter="destination",source_workload="web",source_workload_namespace="",' +
      'source_principal="spiffe://sigil.local/workload/web",source_app="web",' +
      'destination_workload="api",destination_workload_namespace="shop",' +
      'destination_principal="spiffe://sigil.local/ns/shop/sa/api",destination_app="api",' +
      'request_protocol="http",connection_security_policy="mutual_tls"';
    expect(text).toContain(
      `sigil_requests_total{${common},policy="shop/ingress/0",verdict="allow",response_code="200",grpc_response_status=""} 2`,
    );
    expect(text).toContain(
      `sigil_requests_total{${common},policy="none",verdict="deny",response_code="403",grpc_response_status=""} 1`,
    );
    expect(text).toContain(`policy="shop/ingress/1",verdict="would_deny",response_code="200"`);
  });

  it("counts a peer's requests under the labels of the certificate it presents now", async () => {
    const { authz, metrics } = setUp();
    const before = workload("web");
    // The same workload renewed with another app label: a new identity, the same SPIFFE ID.
    const renewed: ConnectionFacts["peer"] = {
      kind: "workload",
      identity: { ...self, spiffeId: "spiffe://sigil.local/workload/web", labels: { app: "web-v2" } },
    };
    const ok = {
      protocol: "http" as const,
      http: { method: "GET", path: "/", status: 200 },
      bytesSent: 1,
      bytesReceived: 1,
      startedAt: Date.now(),
    };
    authz.record(ingress(before), allow, ok);
    authz.record(ingress(renewed), allow, ok);
    authz.record(ingress(renewed), allow, ok);
    authz.record(ingress(before), allow, { ...ok, http: { ...ok.http, status: 503 } });
    const text = await family(metrics, "sigil_requests_total");
    expect(text).toMatch(/source_app="web",[^}]*response_code="200",[^}]*\} 1$/m);
    expect(text).toMatch(/source_app="web-v2",[^}]*response_code="200",[^}]*\} 2$/m);
    expect(text).toMatch(/source_app="web",[^}]*response_code="503",[^}]*\} 1$/m);
  });

  it("exports cumulative histograms whose count matches the requests", async () => {
    const { authz, metrics } = setUp();
    const web = ingress(workload("web"));
    for (const [ms, bytes] of [
      [0.2, 0],
      [3, 5_000],
      [70_000, 50],
    ] as const) {
      authz.record(web, allow, {
        protocol: "grpc",
        http: { method: "POST", path: "/a.B/C", status: 200 },
        grpcStatus: 5,
        bytesSent: bytes,
        bytesReceived: 10,
        startedAt: Date.now() - ms,
      });
    }
    const text = await family(metrics, "sigil_request_duration_seconds");
    expect(text).toContain("# TYPE sigil_request_duration_seconds histogram");
    expect(text).toMatch(
      /sigil_request_duration_seconds_bucket\{[^}]*grpc_response_status="5",le="0.001"\} 1\n/,
    );
    expect(text).toMatch(/sigil_request_duration_seconds_bucket\{[^}]*le="60"\} 2\n/);
    expect(text).toMatch(/sigil_request_duration_seconds_bucket\{[^}]*le="\+Inf"\} 3\n/);
    expect(text).toMatch(/sigil_request_duration_seconds_count\{[^}]*request_protocol="grpc"[^}]*\} 3$/);
    const sizes = await family(metrics, "sigil_response_bytes");
    expect(sizes).toMatch(/sigil_response_bytes_bucket\{[^}]*le="1"\} 1\n/);
    expect(sizes).toMatch(/sigil_response_bytes_bucket\{[^}]*le="100"\} 2\n/);
    expect(sizes).toMatch(/sigil_response_bytes_sum\{[^}]*\} 5050\n/);
  });

  it("counts TCP connections opened and closed, and their bytes, from the reporter's side", async () => {
    const { authz, metrics } = setUp();
    const egress: ConnectionFacts = {
      direction: "egress",
      port: 5432,
      peer: { kind: "external", address: "198.18.0.9" },
      encrypted: false,
    };
    authz.tcpOpened(egress, allow);
    const opened = await family(metrics, "sigil_tcp_connections_opened_total");
    expect(opened).toMatch(
      /\{reporter="source",source_workload="api",[^}]*destination_workload="unknown",destination_workload_namespace="unknown",destination_principal="unknown",[^}]*connection_security_policy="none"[^}]*\} 1/,
    );
    expect(await family(metrics, "sigil_tcp_connections_closed_total")).toMatch(/\} 0\n?$/);
    authz.record(egress, allow, { protocol: "tcp", bytesSent: 40, bytesReceived: 7, startedAt: Date.now() });
    expect(await family(metrics, "sigil_tcp_connections_closed_total")).toMatch(/\} 1\n?$/);
    expect(await family(metrics, "sigil_tcp_sent_bytes_total")).toMatch(/\} 40\n?$/);
    expect(await family(metrics, "sigil_tcp_received_bytes_total")).toMatch(/\} 7\n?$/);
    // A TCP connection is no request.
    expect(await family(metrics, "sigil_requests_total")).not.toMatch(/request_protocol="tcp"/);
  });

  it("bounds the label sets: beyond the limit, callers fold into one overflow series", async () => {
    const { authz, metrics } = setUp(3);
    const outcome = {
      protocol: "http" as const,
      http: { method: "GET", path: "/", status: 200 },
      bytesSent: 0,
    };
    for (let i = 0; i < 50; i++)
      authz.record(ingress(workload(`client-${i}`)), allow, {
        ...outcome,
        bytesReceived: 0,
        startedAt: Date.now(),
      });
    const text = await family(metrics, "sigil_requests_total");
    const series = text.split("\n").filter((l) => l.startsWith("sigil_requests_total{"));
    expect(series).toHaveLength(4);
    expect(series.filter((l) => l.includes('source_workload="client-'))).toHaveLength(3);
    const overflow = series.find((l) => l.includes('source_workload="overflow"'));
    // The folded series keeps its low-cardinality labels and counts every request that overflowed.
    expect(overflow).toContain('source_principal="overflow"');
    expect(overflow).toContain('destination_workload="overflow"');
    expect(overflow).toContain('policy="overflow"');
    expect(overflow).toContain('reporter="destination"');
    expect(overflow).toContain('response_code="200"');
    expect(overflow).toMatch(/ 47$/);
    expect(metrics.mesh.labelSets.requests).toBe(4);
  });

  it("keeps out-of-range codes from making new label values", async () => {
    const { authz, metrics } = setUp();
    for (const status of [0, 999, 1234])
      authz.record(ingress(workload("web")), allow, {
        protocol: "grpc",
        http: { method: "POST", path: "/", status },
        grpcStatus: 99,
        bytesSent: 0,
        bytesReceived: 0,
        startedAt: Date.now(),
      });
    const text = await family(metrics, "sigil_requests_total");
    expect(text).toMatch(/response_code="0",grpc_response_status=""\} 3/);
  });

  it("exports the process's and Node's default metrics", async () => {
    const { metrics } = setUp();
    const names = (await metrics.registry.getMetricsAsJSON()).map((m) => m.name);
    expect(names).toEqual(
      expect.arrayContaining([
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "nodejs_eventloop_lag_seconds",
      ]),
    );
  });
});
