/**
 * The demo's verdict table decides `npm run demo --once`'s exit code, so its checks must catch what
 * they claim to: a client outcome the policies do not predict, a missing or contradicting flow report,
 * plaintext on the wire, a hop with no TLS handshake, or a fast-path row that was not decided in the
 * handshake. No namespaces needed: rows are built from
 * flow records and wire evidence directly.
 */
import { describe, expect, it } from "vitest";
import type { FlowRecord } from "../../core/flow.ts";
import type { MeshView } from "../../examples/demo/flows.ts";
import { buildRow, renderTable } from "../../examples/demo/report.ts";
import { scenarios, type ClientResult, type Scenario } from "../../examples/demo/traffic.ts";
import type { WorkloadName } from "../../examples/demo/topology.ts";
import type { WireEvidence } from "../../examples/demo/wire.ts";

const ADDRESSES: Record<WorkloadName, string> = {
  web: "198.18.9.10",
  api: "198.18.9.20",
  db: "198.18.9.30",
  rogue: "198.18.9.66",
};
const mesh: MeshView = {
  host: (name) => ({ ipv4: ADDRESSES[name] }),
  spiffeId: (name) => `spiffe://sigil.local/workload/${name}`,
};

function scenario(id: string): Scenario {
  const found = scenarios().find((s) => s.id === id);
  if (!found) throw new Error(`no scenario ${id}`);
  return found;
}

const T0 = 1_000_000;

function record(
  s: Scenario,
  direction: "ingress" | "egress",
  verdict: "allow" | "deny",
  policy: string | null,
  kind: "sidecar" | "fastpath" = "sidecar",
) {
  const reporter = direction === "egress" ? s.from : s.to;
  return {
    id: `${s.id}-${direction}`,
    time: T0 + 5,
    reporter: { spiffeId: mesh.spiffeId(reporter), kind },
    direction,
    source: { spiffeId: mesh.spiffeId(s.from), labels: { app: s.from }, address: ADDRESSES[s.from] },
    destination: { spiffeId: mesh.spiffeId(s.to), labels: { app: s.to }, address: ADDRESSES[s.to] },
    port: s.port,
    protocol: s.protocol,
    ...(s.http ? { http: { ...s.http, status: verdict === "allow" ? 200 : 403 } } : {}),
    verdict,
    wouldDeny: false,
    policy,
    reason: verdict === "allow" ? "allowed" : "default deny",
    encrypted: true,
    bytesSent: 0,
    bytesReceived: 0,
    durationMs: 1,
  } satisfies FlowRecord;
}

function wire(overrides: Partial<WireEvidence> = {}): WireEvidence {
  return {
    hellos: [{ src: ADDRESSES.web, dst: ADDRESSES.api, dstPort: 15006, alpn: ["sigil/1;http1;8080"] }],
    tokenSyns: [],
    plaintextSeen: new Map(),
    packets: 20,
    ...overrides,
  };
}

function ran(s: Scenario, client: ClientResult) {
  return { item: s, startedAt: T0, endedAt: T0 + 10, client };
}

const OK_200: ClientResult = { outcome: "allow", detail: "HTTP 200" };

describe("demo verdict table", () => {
  const get = scenario("web-get-orders");
  const allowFlows = [
    record(get, "egress", "allow", "web-egress/egress/0"),
    record(get, "ingress", "allow", "api-ingress/ingress/0"),
  ];

  it("passes an allowed request seen by both sidecars and carried in TLS", () => {
    const row = buildRow(mesh, ran(get, OK_200), allowFlows, wire());
    expect(row.problems).toEqual([]);
    expect(row.verdict).toBe("allow");
    expect(row.encrypted).toBe("yes (TLS, sigil/1;http1;8080)");
    expect(row.policy).toBe("out: web-egress/egress/0; in: api-ingress/ingress/0");
  });

  it("fails a request whose bytes crossed the wire in the clear, even if it was allowed", () => {
    const leaked = wire({ plaintextSeen: new Map([["GET /api/orders", true]]) });
    const row = buildRow(mesh, ran(get, OK_200), allowFlows, leaked);
    expect(row.ok).toBe(false);
    expect(row.encrypted).toBe("NO: plaintext on the wire");
  });

  it("fails a hop that crossed the wire without a TLS handshake naming its port", () => {
    const row = buildRow(mesh, ran(get, OK_200), allowFlows, wire({ hellos: [] }));
    expect(row.ok).toBe(false);
    expect(row.problems).toContain("no TLS handshake for this hop on the wire");
  });

  it("fails when no sidecar reported the request, or the reports contradict the expectation", () => {
    expect(buildRow(mesh, ran(get, OK_200), [], wire()).problems).toContain(
      "no flow record reached the control plane",
    );
    const denied = [record(get, "ingress", "deny", null)];
    expect(buildRow(mesh, ran(get, OK_200), denied, wire()).problems).toContain("reported as denied");
  });

  it("fails when the client saw something other than the expected outcome", () => {
    const row = buildRow(mesh, ran(get, { outcome: "deny", detail: "HTTP 403" }), allowFlows, wire());
    expect(row.problems).toEqual(["expected allow, the client saw HTTP 403"]);
  });

  it("ignores records outside the request's own time window", () => {
    const late = allowFlows.map((f) => ({ ...f, time: T0 + 500 }));
    expect(buildRow(mesh, ran(get, OK_200), late, wire()).verdict).toBe("no flow reported");
  });

  it("shows a request denied by the caller's sidecar as never sent", () => {
    const admin = scenario("web-get-admin");
    const row = buildRow(
      mesh,
      ran(admin, { outcome: "deny", detail: "HTTP 403" }),
      [record(admin, "egress", "deny", null)],
      wire({ hellos: [] }),
    );
    expect(row.problems).toEqual([]);
    expect(row.verdict).toBe("DENY at web");
    expect(row.encrypted).toBe("not sent (stopped in web)");
    expect(row.policy).toBe("out: default deny");
  });

  describe("fast-path rows", () => {
    const db = scenario("api-db");
    const rogue = scenario("rogue-db");
    const answer: ClientResult = { outcome: "allow", detail: 'answer "db: ok (21 bytes)"' };
    const refused: ClientResult = { outcome: "refused", detail: "no answer (nc exit 1)" };
    const handshake = (s: Scenario) =>
      wire({ hellos: [], tokenSyns: [{ src: ADDRESSES[s.from], dst: ADDRESSES[s.to], dstPort: s.port }] });
    const fastFlows = [
      record(db, "egress", "allow", "api-ingress/egress/0", "fastpath"),
      record(db, "ingress", "allow", "db-ingress/ingress/0", "fastpath"),
    ];

    it("pass an allowed connection decided in the handshake, saying its payload is not encrypted", () => {
      const row = buildRow(mesh, ran(db, answer), fastFlows, handshake(db));
      expect(row.problems).toEqual([]);
      expect(row.verdict).toBe("allow");
      expect(row.encrypted).toBe("no: fast path, identity in the SYN");
      expect(row.policy).toBe("out: api-ingress/egress/0; in: db-ingress/ingress/0");
    });

    it("pass a connection refused in the handshake, whose query never crossed the wire", () => {
      const denied = [record(rogue, "ingress", "deny", null, "fastpath")];
      const row = buildRow(mesh, ran(rogue, refused), denied, handshake(rogue));
      expect(row.problems).toEqual([]);
      expect(row.verdict).toBe("DENY at db");
      expect(row.encrypted).toBe("no payload (refused in the handshake)");
      const leaked = handshake(rogue);
      leaked.plaintextSeen.set("SELECT * FROM users", true);
      expect(buildRow(mesh, ran(rogue, refused), denied, leaked).problems).toEqual([
        'plaintext seen on the wire: "SELECT * FROM users"',
      ]);
    });

    it("fail when the proxy decided instead, or no token-carrying SYN crossed the wire", () => {
      const proxied = [
        record(db, "egress", "allow", "api-ingress/egress/0"),
        record(db, "ingress", "allow", "db-ingress/ingress/0"),
      ];
      expect(buildRow(mesh, ran(db, answer), proxied, handshake(db)).problems).toEqual([
        "not decided by the fast path in the handshake",
      ]);
      expect(buildRow(mesh, ran(db, answer), fastFlows, wire({ hellos: [] })).problems).toEqual([
        "no SYN with an identity token on the wire",
      ]);
    });
  });

  it("prints every failure under the table", () => {
    const good = buildRow(mesh, ran(get, OK_200), allowFlows, wire());
    const bad = buildRow(mesh, ran(get, OK_200), [], wire());
    const table = renderTable([good, bad]);
    expect(table.split("\n").filter((l) => l.startsWith("ok "))).toHaveLength(1);
    expect(table).toMatch(
      /^FAIL web → api:8080 curl GET \/api\/orders: no flow record reached the control plane$/m,
    );
  });
});
