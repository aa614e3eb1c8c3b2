import { randomUUID } from "node:crypto";
import type { FlowRecord } from "../../core/flow.ts";
import type { Labels } from "../../core/labels.ts";

export interface Workload {
  readonly spiffeId: string;
  readonly labels: Labels;
  readonly address: string;
}

const td = "spiffe://sigil.local";

/** The demo mesh's workloads as the sidecars would name them. */
export const demo = {
  web: {
    spiffeId: `${td}/ns/demo/sa/web`,
    labels: { app: "web", "k8s.ns": "demo", tier: "frontend", "proc.user": "web", "k8s.pod": "web-7f9c" },
    address: "198.18.0.10",
  },
  api: {
    spiffeId: `${td}/ns/demo/sa/api`,
    labels: { app: "api", "k8s.ns": "demo", tier: "backend", "k8s.pod": "api-5d2a" },
    address: "198.18.0.11",
  },
  db: {
    spiffeId: `${td}/ns/demo/sa/db`,
    labels: { app: "db", "k8s.ns": "demo", tier: "data" },
    address: "198.18.0.12",
  },
  rogue: {
    spiffeId: `${td}/ns/demo/sa/rogue`,
    labels: { app: "rogue", "k8s.ns": "demo" },
    address: "198.18.0.66",
  },
} satisfies Record<string, Workload>;

export interface FlowSpec {
  readonly from: Workload;
  readonly to: Workload;
  readonly port: number;
  readonly http?: { method: string; path: string; status?: number };
  readonly verdict?: "allow" | "deny";
  readonly wouldDeny?: boolean;
  readonly policy?: string | null;
  readonly direction?: "ingress" | "egress";
  readonly encrypted?: boolean;
  readonly time?: number;
  readonly reason?: string;
}

export function flow(spec: FlowSpec): FlowRecord {
  const direction = spec.direction ?? "ingress";
  const verdict = spec.verdict ?? "allow";
  const reporter = direction === "ingress" ? spec.to : spec.from;
  return {
    id: randomUUID(),
    time: spec.time ?? Date.now(),
    reporter: { spiffeId: reporter.spiffeId, kind: spec.http ? "sidecar" : "fastpath" },
    direction,
    source: { spiffeId: spec.from.spiffeId, labels: spec.from.labels, address: spec.from.address },
    destination: { spiffeId: spec.to.spiffeId, labels: spec.to.labels, address: spec.to.address },
    port: spec.port,
    protocol: spec.http ? "http" : "tcp",
    ...(spec.http ? { http: spec.http } : {}),
    verdict,
    wouldDeny: spec.wouldDeny ?? false,
    policy: spec.policy === undefined ? (verdict === "allow" ? "demo-allow/ingress/0" : null) : spec.policy,
    reason:
      spec.reason ?? (verdict === "allow" ? "allowed by policy" : "no policy allows this (default deny)"),
    encrypted: spec.encrypted ?? true,
    bytesSent: 120,
    bytesReceived: 512,
    durationMs: 3,
  };
}

/** The rogue's own sidecar lets its requests out: no egress policy selects it. */
export const UNRESTRICTED_EGRESS = "egress is not restricted for this workload";

/**
 * Recorded traffic of the demo, shaped as its sidecars report it: web calls the api's order
 * endpoints, the api talks to the database over plain TCP, and the rogue workload is refused both.
 * Each request that passes the caller's sidecar is reported by both sidecars (caller egress, callee
 * ingress); the rogue's HTTP requests are let out by its own sidecar (its egress is not restricted)
 * and refused by the api's, and its database connection is refused in the TCP handshake by the
 * db's fast path (the caller reports no SYN-ACK it never got).
 */
export function demoTraffic(now = Date.now()): FlowRecord[] {
  const { web, api, db, rogue } = demo;
  const records: FlowRecord[] = [];
  let t = now - 60_000;
  const both = (spec: FlowSpec) => {
    t += 100;
    records.push(flow({ ...spec, direction: "egress", time: t, policy: null }));
    records.push(flow({ ...spec, direction: "ingress", time: t + 1 }));
  };
  for (const id of ["123", "456", "9f1c2e7a-1b2c-4d5e-8f90-123456789abc"]) {
    both({ from: web, to: api, port: 8080, http: { method: "GET", path: `/api/orders/${id}`, status: 200 } });
  }
  both({ from: web, to: api, port: 8080, http: { method: "POST", path: "/api/orders", status: 201 } });
  both({
    from: web,
    to: api,
    port: 8080,
    http: { method: "GET", path: "/api/orders/123/items", status: 200 },
  });
  both({ from: web, to: api, port: 8080, http: { method: "GET", path: "/health", status: 200 } });
  both({ from: api, to: db, port: 5432 });
  both({ from: api, to: db, port: 5432 });
  const refusedByApi = (http: { method: string; path: string; status?: number }) => {
    t += 100;
    const spec = { from: rogue, to: api, port: 8080, http, time: t };
    records.push(
      flow({ ...spec, direction: "egress", policy: null, reason: UNRESTRICTED_EGRESS }),
      flow({ ...spec, direction: "ingress", verdict: "deny", time: t + 1 }),
    );
  };
  refusedByApi({ method: "GET", path: "/api/orders/1", status: 403 });
  refusedByApi({ method: "DELETE", path: "/api/orders/7", status: 403 });
  records.push(flow({ from: rogue, to: db, port: 5432, verdict: "deny", time: t + 2 }));
  return records;
}
