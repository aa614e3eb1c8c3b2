import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PolicyStore } from "../../controlplane/policy-store/store.ts";
import type { Peer } from "../../core/identity.ts";
import {
  evaluate,
  httpRulesOnPort,
  peerAuthenticationMode,
  type CompiledPolicySet,
  type Decision,
} from "../../core/policy/index.ts";
import { chooseInboundPaths, chooseOutboundPaths } from "../../sidecar/fastpath/ports.ts";
import { external, workload } from "./policy-helpers.ts";

/** The demo's policies say what examples/policies/README.md says they say. */

const DIR = fileURLToPath(new URL("../../examples/policies/", import.meta.url));
const APPS = ["web", "api", "db", "rogue"] as const;
type App = (typeof APPS)[number];
const labels: Record<App, { app: App }> = {
  web: { app: "web" },
  api: { app: "api" },
  db: { app: "db" },
  rogue: { app: "rogue" },
};
const peers: Record<App, Peer> = {
  web: workload(labels.web),
  api: workload(labels.api),
  db: workload(labels.db),
  rogue: workload(labels.rogue),
};

let store: PolicyStore;
let set: CompiledPolicySet;

beforeAll(async () => {
  store = await PolicyStore.open({ directory: DIR, watch: false });
  set = store.current().set;
});
afterAll(() => store.close());

function call(
  from: App,
  to: App,
  port: number,
  method?: string,
  path?: string,
): { ingress: Decision; egress: Decision } {
  const http =
    method === undefined ? undefined : { method, path: path ?? "/", host: `${to}.local`, headers: {} };
  const common = { port, mode: "enforce" as const, ...(http ? { http } : {}) };
  return {
    egress: evaluate(set, {
      ...common,
      direction: "egress",
      local: { labels: labels[from] },
      peer: peers[to],
    }),
    ingress: evaluate(set, {
      ...common,
      direction: "ingress",
      local: { labels: labels[to] },
      peer: peers[from],
    }),
  };
}

describe("demo policies", () => {
  it("load without errors", () => {
    expect(store.current().errors).toEqual([]);
    expect(
      store
        .current()
        .documents.map((d) => d.document.metadata.name)
        .sort(),
    ).toEqual([
      "api-ingress",
      "api-mtls",
      "db-fastpath",
      "db-ingress",
      "mesh-audit",
      "mesh-mtls",
      "quarantine",
      "quarantine-egress",
      "web-egress",
    ]);
  });

  it("web may GET/POST /api/** on api:8080, on both sides", () => {
    for (const [method, path] of [
      ["GET", "/api/orders"],
      ["POST", "/api/orders/7"],
      ["GET", "/api"],
    ] as const) {
      const d = call("web", "api", 8080, method, path);
      expect(d.egress).toMatchObject({ verdict: "allow", policy: "web-egress/egress/0" });
      expect(d.ingress).toMatchObject({ verdict: "allow", policy: "api-ingress/ingress/0" });
    }
  });

  it("web may not do anything else to api", () => {
    for (const [method, path, port] of [
      ["DELETE", "/api/orders", 8080],
      ["GET", "/admin", 8080],
      ["GET", "/api/../admin", 8080],
      ["GET", "/api/orders", 9090],
    ] as const) {
      const d = call("web", "api", port, method, path);
      expect(d.egress.verdict, `${method} ${path}`).toBe("deny");
      expect(d.ingress.verdict, `${method} ${path}`).toBe("deny");
    }
  });

  it("api may connect to db:5432 at L4, and the port can use the fast path", () => {
    const d = call("api", "db", 5432);
    expect(d.egress).toMatchObject({ verdict: "allow", policy: "api-ingress/egress/0" });
    expect(d.ingress).toMatchObject({ verdict: "allow", policy: "db-ingress/ingress/0" });
    expect(httpRulesOnPort(set, labels.db, 5432)).toBe(false);
    expect(httpRulesOnPort(set, labels.api, 8080)).toBe(true);
    // Eligible only because db says PERMISSIVE on 5432: the fast path never replaces STRICT.
    expect(peerAuthenticationMode(set, labels.db, 5432)).toBe("PERMISSIVE");
    expect(chooseInboundPaths(set, labels.db, [5432])).toMatchObject([{ port: 5432, path: "fastpath" }]);
    expect(chooseOutboundPaths(set, labels.api, [5432])).toMatchObject([{ port: 5432, path: "fastpath" }]);
    expect(peerAuthenticationMode(set, labels.db, 5433)).toBe("STRICT");
  });

  it("a workload with vuln.critical > 0 is refused by its callee and stopped by its own sidecar", () => {
    const request = {
      port: 8080,
      mode: "enforce" as const,
      http: { method: "GET", path: "/api/orders", host: "api.local", headers: {} },
    };
    for (const [critical, verdict] of [
      ["3", "deny"],
      ["0", "allow"],
    ] as const) {
      const web = { ...labels.web, "vuln.critical": critical };
      const egress = evaluate(set, {
        ...request,
        direction: "egress",
        local: { labels: web },
        peer: peers.api,
      });
      const ingress = evaluate(set, {
        ...request,
        direction: "ingress",
        local: { labels: labels.api },
        peer: workload(web),
      });
      expect([egress.verdict, ingress.verdict], `vuln.critical=${critical}`).toEqual([verdict, verdict]);
      if (verdict === "deny") expect(ingress.policy).toBe("quarantine/ingress/0");
    }
  });

  it("every other pair is denied at ingress", () => {
    const allowed = new Set(["web>api:8080", "api>db:5432"]);
    for (const from of APPS)
      for (const to of APPS)
        for (const port of [8080, 5432]) {
          if (from === to || allowed.has(`${from}>${to}:${port}`)) continue;
          const d = call(from, to, port, port === 8080 ? "GET" : undefined, "/api/x").ingress;
          expect(d.verdict, `${from} → ${to}:${port}`).toBe("deny");
        }
  });

  it("web, api and db egress is locked down; rogue's is not restricted but its calls are logged and denied", () => {
    expect(call("web", "db", 5432).egress.verdict).toBe("deny");
    expect(call("api", "web", 8080, "GET", "/").egress.verdict).toBe("deny");
    expect(call("db", "api", 8080, "GET", "/api/x").egress.verdict).toBe("deny");
    const rogue = call("rogue", "api", 8080, "GET", "/api/x");
    expect(rogue.egress.verdict).toBe("allow");
    expect(rogue.ingress).toMatchObject({ verdict: "deny", logged: ["mesh-audit/ingress/0"] });
  });

  it("api's metrics port accepts plaintext scrapes from the demo network only", () => {
    expect(peerAuthenticationMode(set, labels.api, 9090)).toBe("PERMISSIVE");
    expect(peerAuthenticationMode(set, labels.api, 8080)).toBe("STRICT");
    expect(peerAuthenticationMode(set, labels.web, 8080)).toBe("STRICT");
    const scrape = (address: string) =>
      evaluate(set, {
        direction: "ingress",
        local: { labels: labels.api },
        peer: external(address),
        port: 9090,
        http: { method: "GET", path: "/metrics", headers: {} },
        mode: "enforce",
      }).verdict;
    expect(scrape("198.19.0.5")).toBe("allow");
    expect(scrape("203.0.113.5")).toBe("deny");
  });
});
