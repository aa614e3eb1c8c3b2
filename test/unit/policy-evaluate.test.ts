/**
 * Authorization decisions beyond the tables (`policy-evaluate-*.test.ts`): observe mode, reasons and
 * normalized paths, hosts with userinfo, empty selectors, deny rules without ports or hosts; then
 * the connection-level helpers and selector matching. Fixtures: `test/support/policy-table.ts`.
 */
import { describe, expect, it } from "vitest";
import type { Labels } from "../../core/labels.ts";
import {
  connectionPrecheck,
  evaluate,
  httpRulesOnPort,
  peerAuthenticationMode,
  policiesFor,
  selectorMatches,
} from "../../core/policy/index.ts";
import type { Selector } from "../../core/policy/index.ts";
import { external, setFrom, workload } from "./policy-helpers.ts";
import { API, POLICIES, request, set, WEB, web, WEB_GET_API } from "../support/policy-table.ts";

describe("authorization decisions", () => {
  it("observe mode leaves allowed requests unmarked", () => {
    const d = evaluate(set, request(WEB_GET_API, "observe"));
    expect(d).toMatchObject({ verdict: "allow", wouldDeny: false });
  });

  it("reports the normalized path and a reason", () => {
    const d = evaluate(set, request({ ...WEB_GET_API, path: "/api/./x//y?q" }));
    expect(d.path).toBe("/api/x/y");
    expect(d.reason).toBe("allowed by api-ingress/ingress/0");
    const denied = evaluate(set, request({ ...WEB_GET_API, method: "PUT" }));
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
