import { describe, expect, it } from "vitest";
import type { Peer } from "../../core/identity.ts";
import type { Labels } from "../../core/labels.ts";
import { evaluate, type CompiledPolicySet } from "../../core/policy/index.ts";
import type { Finding } from "../../inject/networkpolicy/errors.ts";
import { importNetworkPolicies, renderImport, type ImportResult } from "../../inject/networkpolicy/import.ts";
import { external, setFrom, workload } from "./policy-helpers.ts";

/**
 * The translation is proven by the engine: its YAML output is parsed and compiled as `sigil policy
 * apply` would, and `evaluate()` decides connections of peers it must allow and must refuse.
 */

interface Imported {
  readonly result: ImportResult;
  readonly yaml: string;
  readonly set: CompiledPolicySet;
}

function imported(text: string): Imported {
  const result = importNetworkPolicies([{ name: "np.yaml", text }], "default");
  const yaml = renderImport(result);
  return { result, yaml, set: setFrom(yaml) };
}

const pod = (ns: string, labels: Labels = {}): Labels => ({ ...labels, "k8s.ns": ns });

function allowed(
  set: CompiledPolicySet,
  direction: "ingress" | "egress",
  local: Labels,
  peer: Peer,
  port: number,
): boolean {
  return (
    evaluate(set, { direction, local: { labels: local }, peer, port, mode: "enforce" }).verdict === "allow"
  );
}

const kinds = (findings: readonly Finding[]) => findings.map((f) => `${f.kind} ${f.field}`);

const policy = (spec: string, meta = "{ name: np, namespace: shop }") =>
  `apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: ${meta}\nspec:\n${spec}`;

describe("import-networkpolicy: the idioms, decided by evaluate()", () => {
  const api = pod("shop", { app: "api" });

  it("default deny of egress: the namespace's pods reach nothing, other namespaces' pods are unaffected", () => {
    const { set, result } = imported(policy("  podSelector: {}\n  policyTypes: [Ingress, Egress]"));
    expect(result.policies[0]?.policy.spec).toEqual({
      selector: { matchLabels: { "k8s.ns": "shop" } },
      ingress: [],
      egress: [],
    });
    expect(allowed(set, "egress", api, workload(pod("shop", { app: "db" })), 5432)).toBe(false);
    expect(allowed(set, "egress", api, external("198.18.0.9"), 443)).toBe(false);
    expect(allowed(set, "egress", pod("other", { app: "api" }), external("198.18.0.9"), 443)).toBe(true);
    expect(allowed(set, "ingress", api, workload(pod("shop", { app: "web" })), 8080)).toBe(false);
    expect(result.findings).toEqual([]);
  });

  it("allow all ingress (one empty rule): every peer, in the mesh or not, on every port", () => {
    const { set } = imported(policy("  podSelector: { matchLabels: { app: api } }\n  ingress: [{}]"));
    expect(allowed(set, "ingress", api, external("198.18.3.3"), 1)).toBe(true);
    expect(allowed(set, "ingress", api, workload(pod("elsewhere")), 65535)).toBe(true);
    expect(allowed(set, "ingress", pod("shop", { app: "db" }), workload(pod("shop")), 80)).toBe(false);
  });

  it("allow from pods with labels: same namespace only, on the listed port, with every selector operator", () => {
    const { set, result } = imported(
      policy(`  podSelector: { matchLabels: { app: api } }
  ingress:
    - from:
        - podSelector:
            matchLabels: { app: web }
            matchExpressions:
              - { key: tier, operator: In, values: [frontend, edge] }
              - { key: env, operator: NotIn, values: [dev, test] }
              - { key: team, operator: Exists }
              - { key: legacy, operator: DoesNotExist }
      ports: [{ port: 8080 }]`),
    );
    expect(result.findings).toEqual([]);
    const web = (extra: Labels = {}, ns = "shop") =>
      workload(pod(ns, { app: "web", tier: "edge", team: "a", ...extra }));
    expect(allowed(set, "ingress", api, web(), 8080)).toBe(true);
    expect(allowed(set, "ingress", api, web({ env: "prod" }), 8080)).toBe(true);
    expect(allowed(set, "ingress", api, web(), 9090)).toBe(false);
    expect(allowed(set, "ingress", api, web({}, "other"), 8080)).toBe(false);
    expect(allowed(set, "ingress", api, web({ tier: "backend" }), 8080)).toBe(false);
    expect(allowed(set, "ingress", api, web({ env: "test" }), 8080)).toBe(false);
    expect(allowed(set, "ingress", api, workload(pod("shop", { app: "web", tier: "edge" })), 8080)).toBe(
      false,
    );
    expect(allowed(set, "ingress", api, web({ legacy: "" }), 8080)).toBe(false);
    expect(allowed(set, "ingress", api, web({ app: "rogue" }), 8080)).toBe(false);
    expect(allowed(set, "ingress", pod("other", { app: "api" }), web(), 8080)).toBe(false);
  });

  it("namespace selector on the namespace's name is exact; NotIn still means pods only", () => {
    const { set, result } = imported(
      policy(`  podSelector: { matchLabels: { app: api } }
  ingress:
    - from:
        - namespaceSelector: { matchLabels: { kubernetes.io/metadata.name: monitoring } }
          podSelector: { matchLabels: { app: prometheus } }
    - from:
        - namespaceSelector:
            matchExpressions: [{ key: kubernetes.io/metadata.name, operator: NotIn, values: [shop, dev] }]
      ports: [{ port: 9090 }]`),
    );
    expect(result.findings).toEqual([]);
    expect(allowed(set, "ingress", api, workload(pod("monitoring", { app: "prometheus" })), 8080)).toBe(true);
    expect(allowed(set, "ingress", api, workload(pod("monitoring", { app: "grafana" })), 8080)).toBe(false);
    expect(allowed(set, "ingress", api, workload(pod("shop", { app: "prometheus" })), 8080)).toBe(false);
    expect(allowed(set, "ingress", api, workload(pod("ops")), 9090)).toBe(true);
    expect(allowed(set, "ingress", api, workload(pod("dev")), 9090)).toBe(false);
    // A workload that is no pod (a VM) has no k8s.ns: NotIn must not let it in.
    expect(allowed(set, "ingress", api, workload({ app: "vm" }), 9090)).toBe(false);
  });

  it("namespace selector on other labels: the peer is left out (not widened) without Namespaces, resolved with them", () => {
    const spec = `  podSelector: { matchLabels: { app: api } }
  ingress:
    - from: [{ namespaceSelector: { matchLabels: { team: ops } } }]`;
    const alone = imported(policy(spec));
    expect(kinds(alone.result.findings)).toEqual([
      "approximated spec.ingress[0].from[0].namespaceSelector",
      "approximated spec.ingress[0]",
    ]);
    expect(alone.result.policies[0]?.policy.spec.ingress).toEqual([]);
    expect(allowed(alone.set, "ingress", api, workload(pod("ops")), 8080)).toBe(false);
    expect(allowed(alone.set, "ingress", api, external("198.18.0.1"), 8080)).toBe(false);

    const namespaces = ["ops", "ops-eu", "dev"]
      .map(
        (n) =>
          `apiVersion: v1\nkind: Namespace\nmetadata: { name: ${n}, labels: { team: ${n === "dev" ? "dev" : "ops"} } }\n`,
      )
      .join("---\n");
    const resolved = imported(`${namespaces}---\n${policy(spec)}`);
    expect(kinds(resolved.result.findings)).toEqual([
      "approximated spec.ingress[0].from[0].namespaceSelector",
    ]);
    expect(resolved.result.findings[0]?.message).toMatch(/ops, ops-eu/);
    expect(allowed(resolved.set, "ingress", api, workload(pod("ops-eu")), 8080)).toBe(true);
    expect(allowed(resolved.set, "ingress", api, workload(pod("dev")), 8080)).toBe(false);
    expect(allowed(resolved.set, "ingress", api, workload(pod("new-ops")), 8080)).toBe(false);
  });

  it("ipBlock with except: the block minus the exceptions, for peers outside the mesh", () => {
    const { set, result, yaml } = imported(
      policy(`  podSelector: {}
  ingress:
    - from:
        - ipBlock: { cidr: 198.18.0.0/16, except: [198.18.5.0/24, 198.18.200.0/21] }
        - ipBlock: { cidr: "2001:db8::/32", except: ["2001:db8:0:1::/64"] }`),
    );
    expect(kinds(result.findings)).toEqual([
      "note spec.ingress[0].from[0].ipBlock",
      "note spec.ingress[0].from[1].ipBlock",
    ]);
    const local = pod("shop");
    expect(allowed(set, "ingress", local, external("198.18.4.255"), 80)).toBe(true);
    expect(allowed(set, "ingress", local, external("198.18.5.7"), 80)).toBe(false);
    expect(allowed(set, "ingress", local, external("198.18.203.1"), 80)).toBe(false);
    expect(allowed(set, "ingress", local, external("198.18.208.0"), 80)).toBe(true);
    expect(allowed(set, "ingress", local, external("198.19.0.1"), 80)).toBe(false);
    expect(allowed(set, "ingress", local, external("2001:db8:0:2::1"), 80)).toBe(true);
    expect(allowed(set, "ingress", local, external("2001:db8:0:1::1"), 80)).toBe(false);
    expect(yaml).not.toMatch(/[&*][a-z0-9]+\b/);
  });

  it("ports: endPort ranges, UDP and named ports left out, a rule left with no port left out entirely", () => {
    const { set, result } = imported(
      policy(`  podSelector: { matchLabels: { app: api } }
  ingress:
    - ports: [{ port: 9000, endPort: 9003 }, { protocol: UDP, port: 9100 }, { port: metrics }]
    - ports: [{ protocol: SCTP }, { port: http, protocol: TCP }]`),
    );
    expect(kinds(result.findings)).toEqual([
      "approximated spec.ingress[0].ports[1]",
      "approximated spec.ingress[0].ports[2]",
      "approximated spec.ingress[1].ports[0]",
      "approximated spec.ingress[1].ports[1]",
      "approximated spec.ingress[1]",
    ]);
    const web = workload(pod("shop", { app: "web" }));
    expect(allowed(set, "ingress", api, web, 9000)).toBe(true);
    expect(allowed(set, "ingress", api, web, 9003)).toBe(true);
    expect(allowed(set, "ingress", api, web, 9004)).toBe(false);
    expect(allowed(set, "ingress", api, web, 9100)).toBe(false);
    expect(allowed(set, "ingress", api, web, 80)).toBe(false);
  });

  it("egress: to pods and to addresses on their ports; everything else refused once egress is isolated", () => {
    const { set } = imported(
      policy(`  podSelector: { matchLabels: { app: api } }
  egress:
    - to: [{ podSelector: { matchLabels: { app: db } } }]
      ports: [{ port: 5432, protocol: TCP }]
    - to: [{ ipBlock: { cidr: 198.18.9.0/24 } }]
      ports: [{ port: 443 }]`),
    );
    const db = workload(pod("shop", { app: "db" }));
    expect(allowed(set, "egress", api, db, 5432)).toBe(true);
    expect(allowed(set, "egress", api, db, 5433)).toBe(false);
    expect(allowed(set, "egress", api, workload(pod("other", { app: "db" })), 5432)).toBe(false);
    expect(allowed(set, "egress", api, external("198.18.9.20"), 443)).toBe(true);
    expect(allowed(set, "egress", api, external("198.18.10.20"), 443)).toBe(false);
    // Ingress was not listed in policyTypes either, and Kubernetes then adds it: still refused here.
    expect(allowed(set, "ingress", api, db, 8080)).toBe(false);
  });

  it("policyTypes: rules of an unlisted type are ignored, as Kubernetes ignores them; no Egress leaves egress open", () => {
    const { set, result } = imported(
      policy(`  podSelector: {}
  policyTypes: [Ingress]
  ingress: [{ from: [{ podSelector: {} }] }]
  egress: [{ to: [{ ipBlock: { cidr: 198.18.9.0/24 } }] }]`),
    );
    expect(kinds(result.findings)).toEqual(["note spec.egress"]);
    expect(result.policies[0]?.policy.spec.egress).toBeUndefined();
    expect(allowed(set, "egress", pod("shop"), external("203.0.113.1"), 443)).toBe(true);
    expect(allowed(set, "ingress", pod("shop"), workload(pod("shop")), 80)).toBe(true);
    expect(allowed(set, "ingress", pod("shop"), workload(pod("other")), 80)).toBe(false);
  });

  it("several policies, lists and other kinds: one Sigil policy per NetworkPolicy, the namespace defaulted", () => {
    const list = `apiVersion: v1
kind: List
items:
  - ${policy("  podSelector: {}", "{ name: a }").replace(/\n/g, "\n    ")}
  - ${policy("  podSelector: {}", "{ name: b, namespace: shop }").replace(/\n/g, "\n    ")}
---
apiVersion: v1
kind: Service
metadata: { name: web }
`;
    const { result } = imported(list);
    expect(result.policies.map((p) => p.policy.metadata.name)).toEqual(["netpol.default.a", "netpol.shop.b"]);
    expect(result.policies.map((p) => p.source)).toEqual([
      "np.yaml document 1 item 1 (NetworkPolicy default/a)",
      "np.yaml document 1 item 2 (NetworkPolicy shop/b)",
    ]);
    expect(kinds(result.findings)).toEqual(["note kind"]);
  });
});

describe("import-networkpolicy: bad input is refused naming document and field", () => {
  const refused = (text: string): string => {
    try {
      importNetworkPolicies([{ name: "np.yaml", text }], "default");
    } catch (err) {
      return (err as Error).message;
    }
    throw new Error("expected a refusal");
  };
  const rule = (yaml: string) => policy(`  podSelector: {}\n  ingress:\n    - ${yaml}`);

  it.each([
    ["not YAML", "kind: [", /^np\.yaml document 1 \(line \d+\): not YAML/],
    [
      "no NetworkPolicy",
      "apiVersion: v1\nkind: Service\nmetadata: { name: s }\n",
      /np\.yaml: no NetworkPolicy/,
    ],
    ["a scalar document", "just text\n", /document 1: not a Kubernetes object/],
    [
      "a list without items",
      "apiVersion: v1\nkind: List\n",
      /document 1: items: a list needs an items array/,
    ],
    [
      "another API's NetworkPolicy",
      policy("  podSelector: {}").replace("networking.k8s.io/v1", "projectcalico.org/v3"),
      /document 1 \(NetworkPolicy shop\/np\): apiVersion: /,
    ],
    [
      "an unknown spec field",
      policy("  podSelector: {}\n  ingressRules: []"),
      /\(NetworkPolicy shop\/np\): spec: .*ingressRules/,
    ],
    ["no podSelector", policy("  ingress: []"), /spec\.podSelector: /],
    [
      "ipBlock with a pod selector",
      rule("from: [{ ipBlock: { cidr: 198.18.0.0/24 }, podSelector: {} }]"),
      /spec\.ingress\[0\]\.from\[0\]: ipBlock cannot be combined/,
    ],
    ["an empty peer", rule("from: [{}]"), /spec\.ingress\[0\]\.from\[0\]: a peer needs/],
    [
      "endPort with a named port",
      rule("ports: [{ port: http, endPort: 90 }]"),
      /spec\.ingress\[0\]\.ports\[0\]\.endPort: endPort needs a numeric port/,
    ],
    [
      "endPort below port",
      rule("ports: [{ port: 90, endPort: 80 }]"),
      /spec\.ingress\[0\]\.ports\[0\]\.endPort: endPort 80 is below port 90/,
    ],
    ["port 0", rule("ports: [{ port: 0 }]"), /spec\.ingress\[0\]\.ports\[0\]\.port: /],
    ["protocol ICMP", rule("ports: [{ protocol: ICMP }]"), /spec\.ingress\[0\]\.ports\[0\]\.protocol: /],
    [
      "In without values",
      policy("  podSelector: { matchExpressions: [{ key: app, operator: In }] }"),
      /spec\.podSelector\.matchExpressions\[0\]: operator In needs a non-empty values list/,
    ],
    [
      "a bad cidr",
      rule("from: [{ ipBlock: { cidr: 198.18.0.1/16 } }]"),
      /spec\.ingress\[0\]\.from\[0\]\.ipBlock\.cidr: .*host bits/,
    ],
    [
      "an except outside its cidr",
      rule("from: [{ ipBlock: { cidr: 198.18.0.0/24, except: [198.18.1.0/25] } }]"),
      /spec\.ingress\[0\]\.from\[0\]\.ipBlock\.except\[0\]: .*not within/,
    ],
    [
      "a pod label that is an identity label of Sigil's",
      policy("  podSelector: { matchLabels: { k8s.ns: x } }"),
      /spec\.podSelector\.matchLabels\.k8s\.ns: "k8s\.ns" is an identity label/,
    ],
    [
      "the same policy twice",
      `${policy("  podSelector: {}")}\n---\n${policy("  podSelector: {}")}`,
      /document 2 \(NetworkPolicy shop\/np\): metadata\.name: NetworkPolicy shop\/np is also np\.yaml document 1/,
    ],
    [
      "a Namespace without a name",
      `apiVersion: v1\nkind: Namespace\nmetadata: {}\n---\n${policy("  podSelector: {}")}`,
      /document 1 \(Namespace \(unnamed\)\): metadata\.name: /,
    ],
  ])("%s", (_, text, message) => {
    expect(refused(text)).toMatch(message);
  });
});
