import { describe, expect, it } from "vitest";
import type { Peer } from "../../core/identity.ts";
import type { Labels } from "../../core/labels.ts";
import {
  connectionPrecheck,
  evaluate,
  httpRulesOnPort,
  peerAuthenticationMode,
  policiesFor,
  selectorMatches,
} from "../../core/policy/index.ts";
import type { AuthzRequest, Selector } from "../../core/policy/index.ts";
import { external, setFrom, workload } from "./policy-helpers.ts";

const POLICIES = `
apiVersion: sigil.dev/v1
kind: AuthorizationPolicy
metadata: { name: api-ingress }
spec:
  selector: { matchLabels: { app: api } }
  ingress:
    - action: allow
      from: [{ matchLabels: { app: web } }]
      ports: [8080]
      http: { methods: [GET, POST], paths: ["/api/**"] }
    - action: allow
      from:
        - matchLabels: { app: web }
          matchExpressions: [{ key: tier, operator: In, values: [frontend, edge] }]
      ports: [8080]
      http: { methods: [GET], paths: ["/orders/*/items"] }
    - action: allow
      from: [{ matchExpressions: [{ key: team, operator: Prefix, value: pay }] }]
      ports: [8080]
      http: { paths: ["/billing"], hosts: ["api.local", "*.api.test"] }
    - action: allow
      from: [{ matchLabels: { app: web } }]
      ports: [8080]
      http:
        paths: ["/tenant"]
        headers: [{ name: X-Tenant, value: acme }, { name: x-debug, present: false }]
    - action: allow
      from:
        - matchExpressions:
            - { key: env, operator: NotEquals, value: prod }
            - { key: ci, operator: Exists }
            - { key: quarantined, operator: Absent }
      ports: [9000]
    - action: allow
      from: [{ cidrs: ["198.18.0.0/24", "2001:db8::/32"] }]
      ports: [8081]
    - action: log
      from: [{ matchLabels: { app: web } }]
      ports: [8080]
      http: { paths: ["/api/audit/**"] }
---
apiVersion: sigil.dev/v1
kind: AuthorizationPolicy
metadata: { name: api-deny }
spec:
  selector: { matchLabels: { app: api } }
  ingress:
    - action: deny
      ports: [8080]
      http: { paths: ["/api/admin/**"] }
    - action: deny
      ports: [8080]
      http: { methods: [DELETE] }
    - action: deny
      from: [{ matchLabels: { vuln.critical: "true" } }]
---
apiVersion: sigil.dev/v1
kind: AuthorizationPolicy
metadata: { name: web-egress }
spec:
  selector: { matchLabels: { app: web } }
  egress:
    - action: allow
      to: [{ matchLabels: { app: api } }]
      ports: [8080]
      http: { methods: [GET, POST], paths: ["/api/**"] }
    - action: allow
      to: [{ dnsNames: ["*.example.com", "api.partner.test"] }]
      ports: [443]
    - action: allow
      to: [{ cidrs: ["198.18.9.0/24", "2001:db8:9::/48"] }]
      ports: [5432]
    - action: deny
      to: [{ cidrs: ["198.18.9.66"] }]
---
apiVersion: sigil.dev/v1
kind: AuthorizationPolicy
metadata: { name: locked-egress }
spec:
  selector: { matchLabels: { app: locked } }
  egress: []
---
apiVersion: sigil.dev/v1
kind: PeerAuthentication
metadata: { name: mesh-permissive }
spec:
  selector: {}
  mode: PERMISSIVE
---
apiVersion: sigil.dev/v1
kind: PeerAuthentication
metadata: { name: api-mtls }
spec:
  selector: { matchLabels: { app: api } }
  mode: STRICT
  portLevel: { "9090": PERMISSIVE, "9091": DISABLE }
`;

const set = setFrom(POLICIES);
const API: Labels = { app: "api" };
const WEB: Labels = { app: "web" };
const web = workload({ app: "web" });

interface Case {
  name: string;
  direction?: "ingress" | "egress";
  local?: Labels;
  peer: Peer;
  port: number;
  method?: string;
  path?: string;
  host?: string;
  headers?: Record<string, string | string[]>;
  verdict: "allow" | "deny";
  policy: string | null;
  logged?: string[];
}

function request(c: Case, mode: "enforce" | "observe" = "enforce"): AuthzRequest {
  const base = {
    direction: c.direction ?? "ingress",
    local: { labels: c.local ?? API },
    peer: c.peer,
    port: c.port,
    mode,
  };
  if (c.method === undefined) return base;
  const http = { method: c.method, path: c.path ?? "/", headers: c.headers ?? {} };
  return { ...base, http: c.host === undefined ? http : { ...http, host: c.host } };
}

const CASES: Case[] = [
  // labels: matchLabels equals, In, Prefix, NotEquals/Exists/Absent
  {
    name: "web GET /api/x",
    peer: web,
    port: 8080,
    method: "GET",
    path: "/api/x",
    verdict: "allow",
    policy: "api-ingress/ingress/0",
  },
  {
    name: "web POST /api",
    peer: web,
    port: 8080,
    method: "POST",
    path: "/api",
    verdict: "allow",
    policy: "api-ingress/ingress/0",
  },
  {
    name: "other app GET /api/x",
    peer: workload({ app: "batch" }),
    port: 8080,
    method: "GET",
    path: "/api/x",
    verdict: "deny",
    policy: null,
  },
  {
    name: "In: tier=edge",
    peer: workload({ app: "web", tier: "edge" }),
    port: 8080,
    method: "GET",
    path: "/orders/7/items",
    verdict: "allow",
    policy: "api-ingress/ingress/1",
  },
  {
    name: "In: tier=backend",
    peer: workload({ app: "web", tier: "backend" }),
    port: 8080,
    method: "GET",
    path: "/orders/7/items",
    verdict: "deny",
    policy: null,
  },
  {
    name: "In: tier absent",
    peer: web,
    port: 8080,
    method: "GET",
    path: "/orders/7/items",
    verdict: "deny",
    policy: null,
  },
  {
    name: "Prefix: team=payments",
    peer: workload({ team: "payments" }),
    port: 8080,
    method: "GET",
    path: "/billing",
    host: "api.local",
    verdict: "allow",
    policy: "api-ingress/ingress/2",
  },
  {
    name: "Prefix: team=ops",
    peer: workload({ team: "ops" }),
    port: 8080,
    method: "GET",
    path: "/billing",
    host: "api.local",
    verdict: "deny",
    policy: null,
  },
  {
    name: "NotEquals/Exists/Absent hold",
    peer: workload({ ci: "1", env: "dev" }),
    port: 9000,
    verdict: "allow",
    policy: "api-ingress/ingress/4",
  },
  {
    name: "NotEquals holds when key absent",
    peer: workload({ ci: "1" }),
    port: 9000,
    verdict: "allow",
    policy: "api-ingress/ingress/4",
  },
  {
    name: "NotEquals fails on prod",
    peer: workload({ ci: "1", env: "prod" }),
    port: 9000,
    verdict: "deny",
    policy: null,
  },
  { name: "Exists fails", peer: workload({ env: "dev" }), port: 9000, verdict: "deny", policy: null },
  {
    name: "Absent fails",
    peer: workload({ ci: "1", quarantined: "yes" }),
    port: 9000,
    verdict: "deny",
    policy: null,
  },
  // ports
  {
    name: "allowed peer, wrong port",
    peer: web,
    port: 8443,
    method: "GET",
    path: "/api/x",
    verdict: "deny",
    policy: null,
  },
  // methods (case-sensitive)
  {
    name: "PUT not listed",
    peer: web,
    port: 8080,
    method: "PUT",
    path: "/api/x",
    verdict: "deny",
    policy: null,
  },
  {
    name: "lower-case get is not GET",
    peer: web,
    port: 8080,
    method: "get",
    path: "/api/x",
    verdict: "deny",
    policy: null,
  },
  // paths: exact, * glob, /**
  {
    name: "/** covers deep paths",
    peer: web,
    port: 8080,
    method: "GET",
    path: "/api/a/b/c",
    verdict: "allow",
    policy: "api-ingress/ingress/0",
  },
  {
    name: "/** does not cover sibling prefix",
    peer: web,
    port: 8080,
    method: "GET",
    path: "/apix",
    verdict: "deny",
    policy: null,
  },
  {
    name: "* is exactly one segment",
    peer: workload({ app: "web", tier: "edge" }),
    port: 8080,
    method: "GET",
    path: "/orders/1/2/items",
    verdict: "deny",
    policy: null,
  },
  {
    name: "* needs a segment",
    peer: workload({ app: "web", tier: "edge" }),
    port: 8080,
    method: "GET",
    path: "/orders//items",
    verdict: "deny",
    policy: null,
  },
  {
    name: "exact path, query ignored",
    peer: workload({ team: "pay" }),
    port: 8080,
    method: "GET",
    path: "/billing?x=/api",
    host: "api.local",
    verdict: "allow",
    policy: "api-ingress/ingress/2",
  },
  {
    name: "exact path, trailing slash differs",
    peer: workload({ team: "pay" }),
    port: 8080,
    method: "GET",
    path: "/billing/",
    host: "api.local",
    verdict: "deny",
    policy: null,
  },
  // hosts
  {
    name: "host with port and case",
    peer: workload({ team: "pay" }),
    port: 8080,
    method: "GET",
    path: "/billing",
    host: "API.Local:8080",
    verdict: "allow",
    policy: "api-ingress/ingress/2",
  },
  {
    name: "host wildcard one label",
    peer: workload({ team: "pay" }),
    port: 8080,
    method: "GET",
    path: "/billing",
    host: "eu.api.test",
    verdict: "allow",
    policy: "api-ingress/ingress/2",
  },
  {
    name: "host wildcard not two labels",
    peer: workload({ team: "pay" }),
    port: 8080,
    method: "GET",
    path: "/billing",
    host: "a.eu.api.test",
    verdict: "deny",
    policy: null,
  },
  {
    name: "host missing",
    peer: workload({ team: "pay" }),
    port: 8080,
    method: "GET",
    path: "/billing",
    verdict: "deny",
    policy: null,
  },
  {
    name: "other host",
    peer: workload({ team: "pay" }),
    port: 8080,
    method: "GET",
    path: "/billing",
    host: "evil.local",
    verdict: "deny",
    policy: null,
  },
  // headers (names case-insensitive in policy; request names arrive lower-cased)
  {
    name: "header value and absent header",
    peer: web,
    port: 8080,
    method: "GET",
    path: "/tenant",
    headers: { "x-tenant": "acme" },
    verdict: "allow",
    policy: "api-ingress/ingress/3",
  },
  {
    name: "header wrong value",
    peer: web,
    port: 8080,
    method: "GET",
    path: "/tenant",
    headers: { "x-tenant": "Acme" },
    verdict: "deny",
    policy: null,
  },
  {
    name: "forbidden header present",
    peer: web,
    port: 8080,
    method: "GET",
    path: "/tenant",
    headers: { "x-tenant": "acme", "x-debug": "1" },
    verdict: "deny",
    policy: null,
  },
  {
    name: "repeated header must all match for allow",
    peer: web,
    port: 8080,
    method: "GET",
    path: "/tenant",
    headers: { "x-tenant": ["acme", "evil"] },
    verdict: "deny",
    policy: null,
  },
  {
    name: "header missing",
    peer: web,
    port: 8080,
    method: "GET",
    path: "/tenant",
    verdict: "deny",
    policy: null,
  },
  // DENY over ALLOW
  {
    name: "deny path beats allow /api/**",
    peer: web,
    port: 8080,
    method: "GET",
    path: "/api/admin/users",
    verdict: "deny",
    policy: "api-deny/ingress/0",
  },
  {
    name: "deny path covers its root",
    peer: web,
    port: 8080,
    method: "GET",
    path: "/api/admin",
    verdict: "deny",
    policy: "api-deny/ingress/0",
  },
  {
    name: "deny DELETE",
    peer: web,
    port: 8080,
    method: "DELETE",
    path: "/api/x",
    verdict: "deny",
    policy: "api-deny/ingress/1",
  },
  {
    name: "deny matches method in any case",
    peer: web,
    port: 8080,
    method: "delete",
    path: "/api/x",
    verdict: "deny",
    policy: "api-deny/ingress/1",
  },
  {
    name: "deny by label beats allow",
    peer: workload({ app: "web", "vuln.critical": "true" }),
    port: 8080,
    method: "GET",
    path: "/api/x",
    verdict: "deny",
    policy: "api-deny/ingress/2",
  },
  // log records and continues
  {
    name: "log rule records",
    peer: web,
    port: 8080,
    method: "GET",
    path: "/api/audit/1",
    verdict: "allow",
    policy: "api-ingress/ingress/0",
    logged: ["api-ingress/ingress/6"],
  },
  // CIDR peers (non-mesh): IPv4, IPv4-mapped, IPv6; mesh workloads never match by address
  {
    name: "external v4 in CIDR",
    peer: external("198.18.0.7"),
    port: 8081,
    verdict: "allow",
    policy: "api-ingress/ingress/5",
  },
  {
    name: "external v4-mapped in CIDR",
    peer: external("::ffff:198.18.0.7"),
    port: 8081,
    verdict: "allow",
    policy: "api-ingress/ingress/5",
  },
  {
    name: "external v4 outside CIDR",
    peer: external("198.18.1.7"),
    port: 8081,
    verdict: "deny",
    policy: null,
  },
  {
    name: "external v6 in CIDR",
    peer: external("2001:db8:1::5"),
    port: 8081,
    verdict: "allow",
    policy: "api-ingress/ingress/5",
  },
  {
    name: "external v6 outside CIDR",
    peer: external("2001:db9::5"),
    port: 8081,
    verdict: "deny",
    policy: null,
  },
  {
    name: "external unparsable address",
    peer: external("not-an-ip"),
    port: 8081,
    verdict: "deny",
    policy: null,
  },
  {
    name: "external peer never matches labels",
    peer: external("198.18.0.7"),
    port: 8080,
    method: "GET",
    path: "/api/x",
    verdict: "deny",
    policy: null,
  },
  // default deny for a workload no policy selects
  {
    name: "unselected workload ingress",
    local: { app: "db" },
    peer: web,
    port: 5432,
    verdict: "deny",
    policy: null,
  },
  // L4 traffic on a port with HTTP rules: HTTP allow cannot allow it, HTTP deny still applies
  {
    name: "opaque TCP to HTTP-only port",
    peer: web,
    port: 8080,
    verdict: "deny",
    policy: "api-deny/ingress/0",
  },
  // egress: workload, dnsName with wildcard, CIDR v4+v6, deny CIDR
  {
    name: "egress to api GET /api/x",
    direction: "egress",
    local: WEB,
    peer: workload({ app: "api" }),
    port: 8080,
    method: "GET",
    path: "/api/x",
    verdict: "allow",
    policy: "web-egress/egress/0",
  },
  {
    name: "egress to api DELETE",
    direction: "egress",
    local: WEB,
    peer: workload({ app: "api" }),
    port: 8080,
    method: "PATCH",
    path: "/api/x",
    verdict: "deny",
    policy: null,
  },
  {
    name: "egress to db (not listed)",
    direction: "egress",
    local: WEB,
    peer: workload({ app: "db" }),
    port: 5432,
    verdict: "deny",
    policy: null,
  },
  {
    name: "egress dns wildcard",
    direction: "egress",
    local: WEB,
    peer: external("203.0.113.1", "Pay.Example.com."),
    port: 443,
    verdict: "allow",
    policy: "web-egress/egress/1",
  },
  {
    name: "egress dns wildcard is one label",
    direction: "egress",
    local: WEB,
    peer: external("203.0.113.1", "a.b.example.com"),
    port: 443,
    verdict: "deny",
    policy: null,
  },
  {
    name: "egress dns apex not covered",
    direction: "egress",
    local: WEB,
    peer: external("203.0.113.1", "example.com"),
    port: 443,
    verdict: "deny",
    policy: null,
  },
  {
    name: "egress dns exact",
    direction: "egress",
    local: WEB,
    peer: external("203.0.113.1", "api.partner.test"),
    port: 443,
    verdict: "allow",
    policy: "web-egress/egress/1",
  },
  {
    name: "egress no dns name",
    direction: "egress",
    local: WEB,
    peer: external("203.0.113.1"),
    port: 443,
    verdict: "deny",
    policy: null,
  },
  {
    name: "egress cidr v4",
    direction: "egress",
    local: WEB,
    peer: external("198.18.9.20"),
    port: 5432,
    verdict: "allow",
    policy: "web-egress/egress/2",
  },
  {
    name: "egress cidr v6",
    direction: "egress",
    local: WEB,
    peer: external("2001:db8:9:ffff::1"),
    port: 5432,
    verdict: "allow",
    policy: "web-egress/egress/2",
  },
  {
    name: "egress cidr v6 outside",
    direction: "egress",
    local: WEB,
    peer: external("2001:db8:a::1"),
    port: 5432,
    verdict: "deny",
    policy: null,
  },
  {
    name: "egress deny host in allowed CIDR",
    direction: "egress",
    local: WEB,
    peer: external("198.18.9.66"),
    port: 5432,
    verdict: "deny",
    policy: "web-egress/egress/3",
  },
  {
    name: "egress unrestricted without egress policy",
    direction: "egress",
    local: API,
    peer: external("203.0.113.9"),
    port: 443,
    verdict: "allow",
    policy: null,
  },
  {
    name: "egress: [] locks everything",
    direction: "egress",
    local: { app: "locked" },
    peer: workload({ app: "api" }),
    port: 8080,
    verdict: "deny",
    policy: null,
  },
];

describe("authorization decisions", () => {
  it.each(CASES)("$name → $verdict", (c) => {
    const d = evaluate(set, request(c));
    expect({ verdict: d.verdict, policy: d.policy }).toEqual({ verdict: c.verdict, policy: c.policy });
    expect(d.wouldDeny).toBe(false);
    expect(d.logged).toEqual(c.logged ?? []);
  });

  it.each(CASES.filter((c) => c.verdict === "deny"))("observe mode lets through: $name", (c) => {
    const d = evaluate(set, request(c, "observe"));
    expect(d.verdict).toBe("allow");
    expect(d.wouldDeny).toBe(true);
    expect(d.policy).toBe(c.policy);
    expect(d.reason).toMatch(/would deny/);
  });

  it("observe mode leaves allowed requests unmarked", () => {
    const d = evaluate(set, request(CASES[0] as Case, "observe"));
    expect(d).toMatchObject({ verdict: "allow", wouldDeny: false });
  });

  it("reports the normalized path and a reason", () => {
    const d = evaluate(set, request({ ...(CASES[0] as Case), path: "/api/./x//y?q" }));
    expect(d.path).toBe("/api/x/y");
    expect(d.reason).toBe("allowed by api-ingress/ingress/0");
    const denied = evaluate(set, request({ ...(CASES[0] as Case), method: "PUT" }));
    expect(denied.reason).toBe("no rule allows this ingress (default deny)");
  });

  it("userinfo in a host never satisfies an allow", () => {
    const s = setFrom(`
apiVersion: sigil.dev/v1
kind: AuthorizationPolicy
metadata: { name: h }
spec:
  selector: {}
  ingress:
    - { action: allow, http: { hosts: [api.local] } }
`);
    const base = {
      direction: "ingress" as const,
      local: { labels: API },
      peer: web,
      port: 80,
      mode: "enforce" as const,
    };
    const req = (host: string, path = "/") =>
      evaluate(s, { ...base, http: { method: "GET", path, host, headers: {} } });
    expect(req("API.local:80").verdict).toBe("allow");
    expect(req("evil@api.local").verdict).toBe("deny");
    expect(req("api.local", "http://evil@api.local/").verdict).toBe("deny");
  });

  it("matchLabels: {} matches any mesh workload and no external peer", () => {
    const s = setFrom(`
apiVersion: sigil.dev/v1
kind: AuthorizationPolicy
metadata: { name: m }
spec:
  selector: {}
  ingress:
    - { action: allow, from: [{ matchLabels: {} }] }
`);
    const base = {
      direction: "ingress" as const,
      local: { labels: API },
      port: 80,
      mode: "enforce" as const,
    };
    expect(evaluate(s, { ...base, peer: workload({}) }).verdict).toBe("allow");
    expect(evaluate(s, { ...base, peer: external("198.18.0.1") }).verdict).toBe("deny");
  });

  it("an HTTP deny rule without ports denies non-HTTP traffic on every port", () => {
    const s = setFrom(`
apiVersion: sigil.dev/v1
kind: AuthorizationPolicy
metadata: { name: p }
spec:
  selector: {}
  ingress:
    - { action: deny, http: { paths: [/admin/**] } }
    - { action: allow }
`);
    const base = {
      direction: "ingress" as const,
      local: { labels: API },
      peer: web,
      port: 5432,
      mode: "enforce" as const,
    };
    expect(evaluate(s, base)).toMatchObject({ verdict: "deny", policy: "p/ingress/0" });
    expect(httpRulesOnPort(s, API, 5432)).toBe(true);
    expect(evaluate(s, { ...base, http: { method: "GET", path: "/", headers: {} } }).verdict).toBe("allow");
  });

  it("a deny host rule also matches a request without any host", () => {
    const s = setFrom(`
apiVersion: sigil.dev/v1
kind: AuthorizationPolicy
metadata: { name: h }
spec:
  selector: {}
  ingress:
    - { action: deny, http: { hosts: [admin.local] } }
    - { action: allow }
`);
    const base = {
      direction: "ingress" as const,
      local: { labels: API },
      peer: web,
      port: 80,
      mode: "enforce" as const,
    };
    const req = (host?: string, path = "/") =>
      evaluate(s, {
        ...base,
        http:
          host === undefined
            ? { method: "GET", path, headers: {} }
            : { method: "GET", path, host, headers: {} },
      });
    expect(req().verdict).toBe("deny");
    expect(req("admin.local").verdict).toBe("deny");
    expect(req("api.local").verdict).toBe("allow");
    expect(req("api.local", "http://admin.local/x").verdict).toBe("deny");
    expect(req("x@admin.local").verdict).toBe("deny");
    expect(req("api.local", "http://x@admin.local/y").verdict).toBe("deny");
  });
});

describe("connection-level helpers", () => {
  it("connectionPrecheck denies only when no request could be allowed", () => {
    const base = {
      direction: "ingress" as const,
      local: { labels: API },
      port: 8080,
      mode: "enforce" as const,
    };
    expect(connectionPrecheck(set, { ...base, peer: web }).verdict).toBe("allow");
    expect(connectionPrecheck(set, { ...base, peer: workload({ app: "rogue" }) }).verdict).toBe("deny");
    expect(
      connectionPrecheck(set, { ...base, peer: workload({ app: "web", "vuln.critical": "true" }) }),
    ).toMatchObject({
      verdict: "deny",
      policy: "api-deny/ingress/2",
    });
    expect(
      connectionPrecheck(set, { ...base, peer: workload({ app: "rogue" }), mode: "observe" }),
    ).toMatchObject({
      verdict: "allow",
      wouldDeny: true,
    });
  });

  it("httpRulesOnPort tells L7 ports from L4 ports", () => {
    expect(httpRulesOnPort(set, API, 8080)).toBe(true);
    expect(httpRulesOnPort(set, API, 9000)).toBe(false);
    expect(httpRulesOnPort(set, { app: "db" }, 5432)).toBe(false);
    expect(httpRulesOnPort(set, WEB, 8080, "egress")).toBe(true);
    expect(httpRulesOnPort(set, WEB, 5432, "egress")).toBe(false);
  });

  it("peer-authentication mode: most specific selector, port-level override, default STRICT", () => {
    expect(peerAuthenticationMode(set, API, 8080)).toBe("STRICT");
    expect(peerAuthenticationMode(set, API, 9090)).toBe("PERMISSIVE");
    expect(peerAuthenticationMode(set, API, 9091)).toBe("DISABLE");
    expect(peerAuthenticationMode(set, WEB, 8080)).toBe("PERMISSIVE");
    const none = setFrom(POLICIES.split("---").slice(0, 2).join("---"));
    expect(peerAuthenticationMode(none, WEB, 8080)).toBe("STRICT");
  });

  it("peer-authentication ties go to the strictest mode", () => {
    const s = setFrom(`
apiVersion: sigil.dev/v1
kind: PeerAuthentication
metadata: { name: a }
spec: { selector: { matchLabels: { app: x } }, mode: DISABLE }
---
apiVersion: sigil.dev/v1
kind: PeerAuthentication
metadata: { name: b }
spec: { selector: { matchLabels: { tier: y } }, mode: PERMISSIVE }
`);
    expect(peerAuthenticationMode(s, { app: "x", tier: "y" }, 1)).toBe("PERMISSIVE");
    expect(peerAuthenticationMode(s, { app: "x" }, 1)).toBe("DISABLE");
  });

  it("policiesFor lists every document selecting a workload", () => {
    expect(
      policiesFor(set, API)
        .map((d) => d.metadata.name)
        .sort(),
    ).toEqual(["api-deny", "api-ingress", "api-mtls", "mesh-permissive"]);
    expect(policiesFor(set, { app: "db" }).map((d) => d.metadata.name)).toEqual(["mesh-permissive"]);
  });

  it("a compiled set is immutable", () => {
    expect(Object.isFrozen(set)).toBe(true);
    expect(Object.isFrozen(set.documents[0])).toBe(true);
    expect(() => {
      (set.documents as unknown as unknown[]).push({});
    }).toThrow(TypeError);
  });
});

describe("selectorMatches", () => {
  const cases: [Selector, Labels, boolean][] = [
    [{}, {}, true],
    [{ matchLabels: { app: "a" } }, { app: "a", x: "y" }, true],
    [{ matchLabels: { app: "a", tier: "t" } }, { app: "a" }, false],
    [{ matchExpressions: [{ key: "app", operator: "Equals", value: "a" }] }, { app: "a" }, true],
    [{ matchExpressions: [{ key: "app", operator: "Equals", value: "a" }] }, {}, false],
    [{ matchExpressions: [{ key: "app", operator: "NotEquals", value: "a" }] }, {}, true],
    [{ matchExpressions: [{ key: "app", operator: "NotEquals", value: "a" }] }, { app: "a" }, false],
    [{ matchExpressions: [{ key: "app", operator: "In", values: ["a", "b"] }] }, { app: "b" }, true],
    [{ matchExpressions: [{ key: "app", operator: "In", values: ["a", "b"] }] }, { app: "c" }, false],
    [{ matchExpressions: [{ key: "app", operator: "Exists" }] }, { app: "" }, true],
    [{ matchExpressions: [{ key: "app", operator: "Exists" }] }, {}, false],
    [{ matchExpressions: [{ key: "app", operator: "Absent" }] }, {}, true],
    [{ matchExpressions: [{ key: "app", operator: "Absent" }] }, { app: "" }, false],
    [
      { matchExpressions: [{ key: "img", operator: "Prefix", value: "reg.local/" }] },
      { img: "reg.local/x" },
      true,
    ],
    [
      { matchExpressions: [{ key: "img", operator: "Prefix", value: "reg.local/" }] },
      { img: "evil/reg.local/" },
      false,
    ],
    [{ matchLabels: { toString: "x" } }, {}, false],
  ];
  it.each(cases)("%j on %j → %s", (selector, labels, expected) => {
    expect(selectorMatches(selector, labels)).toBe(expected);
  });
});
