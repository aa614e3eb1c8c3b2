/**
 * The traffic the demo drives, with ordinary clients run as the application user inside the workload
 * namespaces: curl for HTTP, a plain gRPC client, nc for TCP. Nothing here knows about the mesh; the
 * clients dial the destination's real address and the capture rules do the rest.
 */
import { join } from "node:path";
import { REPO_ROOT, type Mesh } from "./mesh.ts";
import type { WorkloadName } from "./topology.ts";

export type Outcome = "allow" | "deny" | "refused";

export interface ClientResult {
  /** What the client saw, in the demo's terms; null when it was none of them (an error). */
  outcome: Outcome | null;
  /** The client's own words: HTTP status, gRPC status, the database's answer, or the error. */
  detail: string;
}

export interface Scenario {
  id: string;
  from: WorkloadName;
  to: WorkloadName;
  port: number;
  protocol: "http" | "grpc" | "tcp";
  /** As shown in the table. */
  request: string;
  expect: Outcome;
  /**
   * `fastpath`: decided in the TCP handshake by the L4 fast path (identity token in the SYN), the
   * payload then carried by the kernel, unencrypted; otherwise through the sidecars' proxies.
   */
  dataPath?: "fastpath";
  /** Method and path as the sidecars report them (normalized). */
  http?: { method: string; path: string };
  /**
   * Bytes of this request or its answer that must never cross the wire in the clear (for an allowed
   * fast-path connection, none: its payload is plain by design).
   */
  needles: string[];
  run(mesh: Mesh): Promise<ClientResult>;
}

const CURL_REFUSED = new Map([
  [7, "connection refused"],
  [52, "empty reply (connection closed)"],
  [56, "connection reset"],
  [35, "TLS failure"],
]);

function curl(from: WorkloadName, to: WorkloadName, method: "GET" | "POST", path: string, body?: string) {
  return async (mesh: Mesh): Promise<ClientResult> => {
    const url = `http://${mesh.host(to).ipv4}:8080${path}`;
    const argv = ["curl", "-sS", "--path-as-is", "--max-time", "8", "-o", "/dev/null", "-w", "%{http_code}"];
    if (method === "POST")
      argv.push("-X", "POST", "-H", "content-type: text/plain", "--data-binary", body ?? "");
    const result = await mesh.exec(from, [...argv, url], { timeoutMs: 15_000 });
    if (result.code === 0) {
      const status = Number(result.stdout.trim());
      const outcome = status >= 200 && status < 300 ? "allow" : status === 403 ? "deny" : null;
      return { outcome, detail: `HTTP ${status}` };
    }
    const refused = CURL_REFUSED.get(result.code ?? -1);
    if (refused) return { outcome: "refused", detail: refused };
    return { outcome: null, detail: `curl exit ${result.code}: ${result.stderr.trim()}` };
  };
}

function grpcCall(from: WorkloadName, to: WorkloadName, id: string) {
  return async (mesh: Mesh): Promise<ClientResult> => {
    const client = join(REPO_ROOT, "examples/demo/apps/grpc-client.ts");
    const result = await mesh.exec(from, mesh.tsArgv(client, [`${mesh.host(to).ipv4}:50051`, id]), {
      timeoutMs: 30_000,
      cwd: REPO_ROOT,
    });
    const line = result.stdout.trim().split("\n").at(-1) ?? "";
    let parsed: { ok?: boolean; code?: number; details?: string };
    try {
      parsed = JSON.parse(line) as typeof parsed;
    } catch {
      return { outcome: null, detail: `gRPC client failed: ${result.stderr.trim() || line}` };
    }
    if (parsed.ok) return { outcome: "allow", detail: "gRPC OK" };
    // PERMISSION_DENIED is the sidecar's refusal; UNAVAILABLE is a refused connection.
    if (parsed.code === 7) return { outcome: "deny", detail: "gRPC 7 PERMISSION_DENIED" };
    if (parsed.code === 14) return { outcome: "refused", detail: "gRPC 14 UNAVAILABLE" };
    return { outcome: null, detail: `gRPC status ${parsed.code}: ${parsed.details ?? ""}` };
  };
}

function tcpQuery(from: WorkloadName, to: WorkloadName, query: string) {
  return async (mesh: Mesh): Promise<ClientResult> => {
    // -v: nc says on stderr whether the connect succeeded or why it failed.
    const result = await mesh.exec(from, ["nc", "-v", "-N", "-w", "3", mesh.host(to).ipv4, "5432"], {
      input: `${query}\n`,
      timeoutMs: 15_000,
    });
    const answer = result.stdout.trim();
    if (answer.startsWith("db: ok")) return { outcome: "allow", detail: `answer "${answer}"` };
    if (answer !== "") return { outcome: "refused", detail: `unexpected "${answer}"` };
    // nc reports a connect answered with a RST (what a refusal in the handshake looks like).
    if (/connection refused/i.test(result.stderr))
      return { outcome: "refused", detail: "connection refused" };
    return { outcome: "refused", detail: `no answer (nc exit ${result.code})` };
  };
}

/** The first pass, against examples/policies as they are. */
export function scenarios(): Scenario[] {
  return [
    {
      id: "web-get-orders",
      from: "web",
      to: "api",
      port: 8080,
      protocol: "http",
      request: "curl GET /api/orders",
      expect: "allow",
      http: { method: "GET", path: "/api/orders" },
      needles: ["GET /api/orders", "keyboard"],
      run: curl("web", "api", "GET", "/api/orders"),
    },
    {
      id: "web-post-orders",
      from: "web",
      to: "api",
      port: 8080,
      protocol: "http",
      request: "curl POST /api/orders",
      expect: "allow",
      http: { method: "POST", path: "/api/orders" },
      needles: ["POST /api/orders", "card-4111-demo"],
      run: curl("web", "api", "POST", "/api/orders", "item=mouse;payment=card-4111-demo"),
    },
    {
      id: "web-get-admin",
      from: "web",
      to: "api",
      port: 8080,
      protocol: "http",
      request: "curl GET /admin/users",
      expect: "deny",
      http: { method: "GET", path: "/admin/users" },
      needles: ["/admin/users"],
      run: curl("web", "api", "GET", "/admin/users"),
    },
    {
      id: "web-traversal",
      from: "web",
      to: "api",
      port: 8080,
      protocol: "http",
      request: "curl GET /api/../admin/users",
      expect: "deny",
      http: { method: "GET", path: "/admin/users" },
      needles: ["/api/../admin"],
      run: curl("web", "api", "GET", "/api/../admin/users"),
    },
    {
      id: "web-grpc",
      from: "web",
      to: "api",
      port: 50051,
      protocol: "grpc",
      request: "gRPC Orders/GetOrder",
      expect: "deny",
      http: { method: "POST", path: GRPC_PATH },
      needles: ["monitor"],
      run: grpcCall("web", "api", "1002"),
    },
    {
      id: "api-db",
      from: "api",
      to: "db",
      port: 5432,
      protocol: "tcp",
      request: "nc 'SELECT id FROM orders'",
      expect: "allow",
      dataPath: "fastpath",
      needles: [],
      run: tcpQuery("api", "db", "SELECT id FROM orders"),
    },
    {
      id: "web-db",
      from: "web",
      to: "db",
      port: 5432,
      protocol: "tcp",
      request: "nc 'SELECT version()'",
      expect: "refused",
      needles: ["SELECT version()"],
      run: tcpQuery("web", "db", "SELECT version()"),
    },
    {
      id: "rogue-api",
      from: "rogue",
      to: "api",
      port: 8080,
      protocol: "http",
      request: "curl GET /api/orders",
      expect: "deny",
      http: { method: "GET", path: "/api/orders" },
      needles: ["GET /api/orders"],
      run: curl("rogue", "api", "GET", "/api/orders"),
    },
    {
      id: "rogue-db",
      from: "rogue",
      to: "db",
      port: 5432,
      protocol: "tcp",
      request: "nc 'SELECT * FROM users'",
      expect: "refused",
      dataPath: "fastpath",
      needles: ["SELECT * FROM users"],
      run: tcpQuery("rogue", "db", "SELECT * FROM users"),
    },
  ];
}

export const GRPC_PATH = "/demo.orders.v1.Orders/GetOrder";

/** The gRPC call again, once examples/demo/policies/grpc-orders.yaml is in the watched directory. */
export function grpcAfterPolicyChange(): Scenario {
  return {
    id: "web-grpc-after-change",
    from: "web",
    to: "api",
    port: 50051,
    protocol: "grpc",
    request: "gRPC Orders/GetOrder (+grpc-orders.yaml)",
    expect: "allow",
    http: { method: "POST", path: GRPC_PATH },
    needles: ["monitor"],
    run: grpcCall("web", "api", "1002"),
  };
}

/** web's call to the api while web is quarantined (vuln.critical=3), and again once the label is gone. */
export function quarantineScenarios(): { quarantined: Scenario; lifted: Scenario } {
  const call: Omit<Scenario, "id" | "request" | "expect"> = {
    from: "web",
    to: "api",
    port: 8080,
    protocol: "http",
    http: { method: "GET", path: "/api/orders" },
    needles: ["GET /api/orders"],
    run: curl("web", "api", "GET", "/api/orders"),
  };
  return {
    quarantined: {
      ...call,
      id: "web-quarantined",
      request: "curl GET /api/orders (web vuln.critical=3)",
      expect: "deny",
    },
    lifted: {
      ...call,
      id: "web-quarantine-lifted",
      request: "curl GET /api/orders (label removed)",
      expect: "allow",
    },
  };
}
