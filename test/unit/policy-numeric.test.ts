/**
 * Numeric selectors (`Gt`/`Lt`): vulnerability scanners label workloads with counts and scores, and a
 * quarantine policy compares them. A bound that is not a number is refused where it is written; a label
 * that is not a number never satisfies a comparison. Checked in evaluation, through the xDS wire to the
 * sidecar, and in simulation over recorded flows.
 */
import { describe, expect, it } from "vitest";
import { policySetResource } from "../../controlplane/xds/sigil.ts";
import { simulate } from "../../controlplane/visibility/simulate.ts";
import type { FlowRecord } from "../../core/flow.ts";
import type { Labels } from "../../core/labels.ts";
import {
  decodePolicySet,
  encodePolicySet,
  evaluate,
  formatPolicyError,
  parsePolicyDocuments,
  selectorMatches,
} from "../../core/policy/index.ts";
import type { AuthzRequest, CompiledPolicySet, Selector } from "../../core/policy/index.ts";
import { defaultTypeRegistry } from "../../xds/registry.ts";
import { POLICY_SET } from "../../xds/type-urls.ts";
import { setFrom, workload } from "./policy-helpers.ts";

const QUARANTINE = `apiVersion: sigil.dev/v1
kind: AuthorizationPolicy
metadata: { name: api }
spec:
  selector: { matchLabels: { app: api } }
  ingress:
    - action: deny
      from: [ { matchExpressions: [ { key: vuln.critical, operator: Gt, value: 0 } ] } ]
    - action: allow
      from: [ { matchExpressions: [ { key: vuln.cvss, operator: Lt, value: "7.5" } ] } ]
`;

const api: Labels = { app: "api" };

function ingressFrom(labels: Labels): AuthzRequest {
  return {
    direction: "ingress",
    local: { labels: api },
    peer: workload(labels, "web"),
    port: 8080,
    mode: "enforce",
  };
}

function verdicts(set: CompiledPolicySet): Record<string, string> {
  const cases: Record<string, Labels> = {
    clean: { app: "web", "vuln.critical": "0", "vuln.cvss": "3.1" },
    critical: { app: "web", "vuln.critical": "3", "vuln.cvss": "3.1" },
    highScore: { app: "web", "vuln.critical": "0", "vuln.cvss": "7.5" },
    unscanned: { app: "web" },
    garbledScore: { app: "web", "vuln.cvss": "low" },
    garbledCount: { app: "web", "vuln.critical": "many", "vuln.cvss": "1" },
  };
  return Object.fromEntries(
    Object.entries(cases).map(([name, labels]) => [name, evaluate(set, ingressFrom(labels)).verdict]),
  );
}

const EXPECTED = {
  clean: "allow",
  critical: "deny",
  highScore: "deny",
  unscanned: "deny",
  garbledScore: "deny",
  garbledCount: "allow",
};

describe("numeric selectors", () => {
  it("compare decimal label values; a label that is absent or not a number matches neither Gt nor Lt", () => {
    expect(verdicts(setFrom(QUARANTINE))).toEqual(EXPECTED);
  });

  const cases: [Selector, Labels, boolean][] = [
    [{ matchExpressions: [{ key: "n", operator: "Gt", value: "2" }] }, { n: "10" }, true],
    [{ matchExpressions: [{ key: "n", operator: "Gt", value: "2" }] }, { n: "2" }, false],
    [{ matchExpressions: [{ key: "n", operator: "Gt", value: "-1" }] }, { n: "-0.5" }, true],
    [{ matchExpressions: [{ key: "n", operator: "Lt", value: "2" }] }, { n: "1.99" }, true],
    [{ matchExpressions: [{ key: "n", operator: "Lt", value: "2" }] }, { n: "" }, false],
    [{ matchExpressions: [{ key: "n", operator: "Lt", value: "20" }] }, { n: "0x10" }, false],
    [{ matchExpressions: [{ key: "n", operator: "Gt", value: "2" }] }, { n: "1e3" }, false],
    [{ matchExpressions: [{ key: "n", operator: "Gt", value: "2" }] }, { n: " 3" }, false],
    [{ matchExpressions: [{ key: "n", operator: "Gt", value: "2" }] }, { n: "Infinity" }, false],
  ];
  it.each(cases)("%j on %j → %s", (selector, labels, expected) => {
    expect(selectorMatches(selector, labels)).toBe(expected);
  });

  it.each([
    ["a word", `value: high`, 8, /value: operator Gt compares numbers: "high" is not a decimal number/],
    ["hex", `value: "0x10"`, 8, /value: operator Gt compares numbers: "0x10"/],
    ["no value", ``, 8, /operator Gt needs "value"/],
  ])(
    "refuses a bound that is %s at load, naming file, line, column and field",
    (_what, bound, line, message) => {
      const text = QUARANTINE.replace("value: 0", bound).replace(", ,", ",");
      const r = parsePolicyDocuments(text, "policies/quarantine.yaml");
      expect(r.ok).toBe(false);
      const errors = r.ok ? [] : r.errors.map(formatPolicyError);
      expect(errors).toHaveLength(1);
      expect(errors[0]).toMatch(
        new RegExp(`^policies/quarantine\\.yaml:${line}:\\d+: spec\\.ingress\\[0\\]\\.from\\[0\\]`),
      );
      expect(errors[0]).toMatch(message);
    },
  );

  it("decide the same in the sidecar after the xDS round trip", () => {
    const registry = defaultTypeRegistry();
    const content = encodePolicySet(setFrom(QUARANTINE), api, "enforce");
    const resource = policySetResource(registry, { ...content, name: "policy-api", generation: 1 });
    const decoded = decodePolicySet(registry.decode(POLICY_SET, resource.value).message);
    expect(verdicts(decoded.policies)).toEqual(EXPECTED);
  });

  it("simulation finds the flows a numeric quarantine would deny", () => {
    const flow = (id: string, labels: Labels): FlowRecord => ({
      id,
      time: 1,
      reporter: { spiffeId: "spiffe://sigil.local/workload/api", kind: "sidecar" },
      direction: "ingress",
      source: { spiffeId: "spiffe://sigil.local/workload/web", labels },
      destination: { spiffeId: "spiffe://sigil.local/workload/api", labels: api },
      port: 8080,
      protocol: "tcp",
      verdict: "allow",
      wouldDeny: false,
      policy: "old/ingress/0",
      reason: "allowed",
      encrypted: true,
      bytesSent: 0,
      bytesReceived: 0,
      durationMs: 1,
    });
    const proposed = parsePolicyDocuments(QUARANTINE, "q.yaml");
    if (!proposed.ok) throw new Error("quarantine policy must parse");
    const result = simulate(
      [
        flow("a", { app: "web", "vuln.critical": "2", "vuln.cvss": "1" }),
        flow("b", { app: "web", "vuln.critical": "0", "vuln.cvss": "1" }),
      ],
      { current: [], proposed: proposed.documents.map((d) => d.document) },
    );
    expect(result.nowDenied).toBe(1);
    expect(result.changes[0]?.flowIds).toEqual(["a"]);
    expect(result.changes[0]?.after.policy).toBe("api/ingress/0");
  });
});
