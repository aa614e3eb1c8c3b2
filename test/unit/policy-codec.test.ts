/**
 * The policy codec (core/policy/codec.ts) both ways: what the control plane encodes from YAML
 * documents, through the wire and decoded by the agent, must decide every request the same way and
 * name the same rule ids; a set it cannot read faithfully is refused with the field.
 */
import { describe, expect, it } from "vitest";
import { policySetResource } from "../../controlplane/xds/sigil.ts";
import type { Labels } from "../../core/labels.ts";
import {
  compilePolicySet,
  decodePolicySet,
  encodePolicySet,
  evaluate,
  formatPolicyError,
  parsePolicyDocuments,
  peerAuthenticationMode,
} from "../../core/policy/index.ts";
import type { AuthzRequest, CompiledPolicySet, PolicySetMessage } from "../../core/policy/index.ts";
import { defaultTypeRegistry } from "../../xds/registry.ts";
import { POLICY_SET } from "../../xds/type-urls.ts";

const registry = defaultTypeRegistry();

const YAML = `apiVersion: sigil.dev/v1
kind: AuthorizationPolicy
metadata: { name: api-ingress }
spec:
  selector: { matchLabels: { app: api } }
  ingress:
    - action: deny
      http: { paths: ["/admin/**"] }
    - action: allow
      from:
        - matchLabels: { app: web }
          matchExpressions: [ { key: tier, operator: In, values: [frontend, edge] }, { key: env, operator: NotEquals, value: prod } ]
        - cidrs: ["198.18.0.0/24"]
      ports: [8080]
      http:
        methods: [GET]
        paths: ["/api/*/orders"]
        headers: [ { name: x-tenant, value: acme }, { name: x-debug, present: false } ]
    - action: log
      from: [ { matchExpressions: [ { key: team, operator: Exists } ] } ]
---
apiVersion: sigil.dev/v1
kind: AuthorizationPolicy
metadata: { name: api-egress }
spec:
  selector: { matchLabels: { app: api } }
  egress:
    - action: allow
      to: [ { matchLabels: { app: db } }, { dnsNames: ["*.example.com"] } ]
      ports: [5432, 443]
---
apiVersion: sigil.dev/v1
kind: AuthorizationPolicy
metadata: { name: other }
spec:
  selector: { matchLabels: { app: db } }
  ingress: [ { action: allow } ]
---
apiVersion: sigil.dev/v1
kind: PeerAuthentication
metadata: { name: api-mtls }
spec:
  selector: { matchLabels: { app: api } }
  mode: STRICT
  portLevel: { "9090": PERMISSIVE }
`;

function compiled(yaml: string): CompiledPolicySet {
  const r = parsePolicyDocuments(yaml, "test.yaml");
  if (!r.ok) throw new Error(r.errors.map(formatPolicyError).join("\n"));
  return compilePolicySet(r.documents.map((d) => d.document));
}

function wire(spec: PolicySetMessage): Record<string, unknown> {
  const resource = policySetResource(registry, spec);
  return registry.decode(POLICY_SET, resource.value).message;
}

const api: Labels = { app: "api" };
const web = (extra: Labels = {}) => ({
  kind: "workload" as const,
  identity: {
    spiffeId: "spiffe://sigil.local/workload/web",
    trustDomain: "sigil.local",
    labels: { app: "web", tier: "edge", ...extra },
    serial: "01",
    notAfter: new Date(Date.now() + 3600_000),
  },
});
const headers = { "x-tenant": "acme" };

const requests: [string, Omit<AuthzRequest, "local" | "mode">][] = [
  [
    "allowed GET",
    {
      direction: "ingress",
      peer: web(),
      port: 8080,
      http: { method: "GET", path: "/api/v1/orders", headers },
    },
  ],
  [
    "wrong method",
    {
      direction: "ingress",
      peer: web(),
      port: 8080,
      http: { method: "POST", path: "/api/v1/orders", headers },
    },
  ],
  [
    "deny wins",
    { direction: "ingress", peer: web(), port: 8080, http: { method: "GET", path: "/admin/x", headers } },
  ],
  [
    "prod excluded",
    {
      direction: "ingress",
      peer: web({ env: "prod" }),
      port: 8080,
      http: { method: "GET", path: "/api/v1/orders", headers },
    },
  ],
  [
    "header missing",
    {
      direction: "ingress",
      peer: web(),
      port: 8080,
      http: { method: "GET", path: "/api/v1/orders", headers: {} },
    },
  ],
  [
    "debug header",
    {
      direction: "ingress",
      peer: web(),
      port: 8080,
      http: { method: "GET", path: "/api/v1/orders", headers: { ...headers, "x-debug": "1" } },
    },
  ],
  [
    "cidr peer",
    {
      direction: "ingress",
      peer: { kind: "external", address: "198.18.0.7" },
      port: 8080,
      http: { method: "GET", path: "/api/v1/orders", headers },
    },
  ],
  [
    "other port",
    {
      direction: "ingress",
      peer: web(),
      port: 9090,
      http: { method: "GET", path: "/api/v1/orders", headers },
    },
  ],
  ["logged and denied", { direction: "ingress", peer: web({ team: "x" }), port: 7000 }],
  [
    "egress to db",
    {
      direction: "egress",
      peer: { ...web(), identity: { ...web().identity, labels: { app: "db" } } },
      port: 5432,
    },
  ],
  [
    "egress by name",
    {
      direction: "egress",
      peer: { kind: "external", address: "203.0.113.9", dnsName: "a.example.com" },
      port: 443,
    },
  ],
  [
    "egress elsewhere",
    {
      direction: "egress",
      peer: { kind: "external", address: "203.0.113.9", dnsName: "b.other.org" },
      port: 443,
    },
  ],
];

describe("decodePolicySet", () => {
  const source = compiled(YAML);
  const content = encodePolicySet(source, api, "enforce");
  const decoded = decodePolicySet(wire({ ...content, name: "policy-x", generation: 7 }));

  it("keeps the enforcement mode, generation and documents of the policies selecting the workload", () => {
    expect(decoded.mode).toBe("enforce");
    expect(decoded.generation).toBe(7);
    expect(decoded.documents.map((d) => d.metadata.name).sort()).toEqual(
      ["api-egress", "api-ingress", "sigil.peer-authentication"].sort(),
    );
  });

  it.each(requests)("decides %s exactly as the source policies do", (_name, request) => {
    for (const mode of ["enforce", "observe"] as const) {
      const full = { ...request, local: { labels: api }, mode } as AuthzRequest;
      const want = evaluate(source, full);
      const got = evaluate(decoded.policies, full);
      expect({
        verdict: got.verdict,
        policy: got.policy,
        wouldDeny: got.wouldDeny,
        logged: got.logged,
      }).toEqual({
        verdict: want.verdict,
        policy: want.policy,
        wouldDeny: want.wouldDeny,
        logged: want.logged,
      });
    }
  });

  it.each(requests)(
    "decides %s the same in a worker given the decoded documents across a thread boundary",
    (_name, request) => {
      // What the agent hands its fast-path and L7 workers: the documents, compiled again there.
      const inWorker = compilePolicySet(structuredClone(decoded.documents));
      const full = { ...request, local: { labels: api }, mode: "enforce" } as AuthzRequest;
      const want = evaluate(decoded.policies, full);
      const got = evaluate(inWorker, full);
      expect([got.verdict, got.policy, got.logged]).toEqual([want.verdict, want.policy, want.logged]);
    },
  );

  it("keeps peer authentication per port", () => {
    expect(peerAuthenticationMode(decoded.policies, api, 8080)).toBe("STRICT");
    expect(peerAuthenticationMode(decoded.policies, api, 9090)).toBe("PERMISSIVE");
  });

  it("carries default-deny egress with no egress rule", () => {
    const set = compiled(`apiVersion: sigil.dev/v1
kind: AuthorizationPolicy
metadata: { name: lock }
spec: { selector: {}, egress: [] }
`);
    const d = decodePolicySet(wire({ ...encodePolicySet(set, api, "observe"), name: "p", generation: 1 }));
    expect(d.mode).toBe("observe");
    const r = evaluate(d.policies, {
      direction: "egress",
      local: { labels: api },
      peer: { kind: "external", address: "203.0.113.1" },
      port: 80,
      mode: "enforce",
    });
    expect(r.verdict).toBe("deny");
  });

  const base: PolicySetMessage = { ...content, name: "bad", generation: 1 };
  it.each<[string, PolicySetMessage, RegExp]>([
    [
      "a rule id outside the language",
      { ...base, ingress: [{ id: "whatever", action: "ALLOW" }] },
      /ingress\[0\]\.id/,
    ],
    [
      "a gap in a policy's rules",
      { ...base, ingress: [{ id: "p/ingress/1", action: "ALLOW" }] },
      /out of order or leaves a gap/,
    ],
    ["egress rules without default deny", { ...base, egress_default_deny: false }, /egress_default_deny/],
    [
      "a path pattern core/policy refuses",
      { ...base, ingress: [{ id: "p/ingress/0", action: "ALLOW", http: { paths: ["/a/../b"] } }] },
      /ingress\[0\]\.http\.paths\[0\]/,
    ],
    [
      "an unparsable CIDR",
      { ...base, ingress: [{ id: "p/ingress/0", action: "ALLOW", peers: [{ cidrs: ["10.0.0.0/33"] }] }] },
      /cidrs/,
    ],
  ])("refuses %s", (_name, spec, error) => {
    expect(() => decodePolicySet(wire(spec))).toThrow(error);
  });

  it("refuses an unspecified enforcement mode", () => {
    const message = { ...wire(base), mode: "ENFORCEMENT_MODE_UNSPECIFIED" };
    expect(() => decodePolicySet(message)).toThrow(/mode/);
  });
});
