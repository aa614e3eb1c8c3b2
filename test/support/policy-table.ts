/**
 * The table-driven authorization suites' fixtures (`test/unit/policy-evaluate*.test.ts`): one policy
 * set covering every rule kind, the request each table row describes, and `decisionTable`, which
 * checks every row's verdict and deciding policy in enforce mode and, for denials, that observe mode
 * lets the request through marked as would-deny.
 */
import { describe, expect, it } from "vitest";
import type { Peer } from "../../core/identity.ts";
import type { Labels } from "../../core/labels.ts";
import { evaluate } from "../../core/policy/index.ts";
import type { AuthzRequest } from "../../core/policy/index.ts";
import { setFrom, workload } from "../unit/policy-helpers.ts";

export const POLICIES = `
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

export const set = setFrom(POLICIES);
export const API: Labels = { app: "api" };
export const WEB: Labels = { app: "web" };
export const web = workload({ app: "web" });

export interface Case {
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

export function request(c: Case, mode: "enforce" | "observe" = "enforce"): AuthzRequest {
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

/** The first row of the request table: web may GET under /api on the api's port. */
export const WEB_GET_API: Case = {
  name: "web GET /api/x",
  peer: web,
  port: 8080,
  method: "GET",
  path: "/api/x",
  verdict: "allow",
  policy: "api-ingress/ingress/0",
};

/** One `it` per row: its verdict and deciding policy; denials again in observe mode. */
export function decisionTable(title: string, cases: readonly Case[]): void {
  describe(title, () => {
    it.each(cases)("$name → $verdict", (c) => {
      const d = evaluate(set, request(c));
      expect({ verdict: d.verdict, policy: d.policy }).toEqual({ verdict: c.verdict, policy: c.policy });
      expect(d.wouldDeny).toBe(false);
      expect(d.logged).toEqual(c.logged ?? []);
    });

    it.each(cases.filter((c) => c.verdict === "deny"))("observe mode lets through: $name", (c) => {
      const d = evaluate(set, request(c, "observe"));
      expect(d.verdict).toBe("allow");
      expect(d.wouldDeny).toBe(true);
      expect(d.policy).toBe(c.policy);
      expect(d.reason).toMatch(/would deny/);
    });
  });
}
