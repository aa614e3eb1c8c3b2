import { describe, expect, it } from "vitest";
import type { UserIdentity } from "../../core/user.ts";
import { evaluate, formatPolicyError, parsePolicyDocuments } from "../../core/policy/index.ts";
import type { AuthzRequest } from "../../core/policy/index.ts";
import { external, setFrom, workload } from "./policy-helpers.ts";

const POLICIES = `
apiVersion: sigil.dev/v1
kind: AuthorizationPolicy
metadata: { name: payments-people }
spec:
  selector: { matchLabels: { app: payments } }
  ingress:
    - action: deny
      from: [{ user: [{ key: user.email_verified, operator: Equals, value: "false" }] }]
    - action: allow
      from: [{ user: [{ key: user.groups, operator: In, values: [payments-admins] }] }]
      ports: [8080]
      http: { paths: ["/admin/**"] }
    - action: allow
      from: [{ user: [{ key: user.email, operator: Prefix, value: "" }] }]
      ports: [8080]
      http: { paths: ["/", "/app/**"] }
    - action: allow
      from:
        - matchLabels: { app: web }
          user: [{ key: user.sub, operator: Equals, value: batch-robot }]
      ports: [8080]
      http: { paths: ["/api/refunds"] }
`;

const set = setFrom(POLICIES);
const alice: UserIdentity = {
  issuer: "https://idp.test",
  sub: "alice",
  email: "alice@example.test",
  emailVerified: true,
  groups: ["staff", "payments-admins"],
};
const bob: UserIdentity = { ...alice, sub: "bob", email: "bob@example.test", groups: ["staff"] };
const browser = external("198.18.0.7");

function request(path: string, user: UserIdentity | undefined, peer = browser): AuthzRequest {
  const base = { direction: "ingress", local: { labels: { app: "payments" } }, peer, port: 8080 } as const;
  const http = { method: "GET", path, headers: {} };
  return user === undefined ? { ...base, mode: "enforce", http } : { ...base, mode: "enforce", http, user };
}

describe("policy on user claims", () => {
  it("allows the admin path only to a member of the admin group", () => {
    expect(evaluate(set, request("/admin/refunds", alice))).toMatchObject({
      verdict: "allow",
      policy: "payments-people/ingress/1",
    });
    expect(evaluate(set, request("/admin/refunds", bob))).toMatchObject({
      verdict: "deny",
      policy: null,
    });
    expect(evaluate(set, request("/app/home", bob)).verdict).toBe("allow");
  });

  it("matches no user rule for a request without a verified user", () => {
    expect(evaluate(set, request("/app/home", undefined)).verdict).toBe("deny");
  });

  it("denies by a boolean claim as its string spelling", () => {
    expect(evaluate(set, request("/app/home", { ...bob, emailVerified: false }))).toMatchObject({
      verdict: "deny",
      policy: "payments-people/ingress/0",
    });
  });

  it("holds a user test next to a workload selector only when both hold", () => {
    const robot: UserIdentity = { issuer: "https://idp.test", sub: "batch-robot", groups: [] };
    const web = workload({ app: "web" });
    expect(evaluate(set, request("/api/refunds", robot, web)).verdict).toBe("allow");
    expect(evaluate(set, request("/api/refunds", robot, workload({ app: "cron" }))).verdict).toBe("deny");
    expect(evaluate(set, request("/api/refunds", bob, web)).verdict).toBe("deny");
    expect(evaluate(set, request("/api/refunds", robot, browser)).verdict).toBe("deny");
  });

  it("refuses user tests on egress, unknown claim keys and operators without operands", () => {
    const bad = `
apiVersion: sigil.dev/v1
kind: AuthorizationPolicy
metadata: { name: bad }
spec:
  selector: {}
  ingress:
    - action: allow
      from: [{ user: [{ key: user.phone, operator: Exists }] }]
    - action: allow
      from: [{ user: [{ key: user.groups, operator: In }] }]
  egress:
    - action: allow
      to: [{ user: [{ key: user.sub, operator: Exists }] }]
`;
    const r = parsePolicyDocuments(bad, "bad.yaml");
    expect(r.ok).toBe(false);
    const text = r.ok ? "" : r.errors.map(formatPolicyError).join("\n");
    expect(text).toMatch(/bad.yaml:9:30: spec.ingress\[0\].from\[0\].user\[0\].key/);
    expect(text).toMatch(/operator In needs a non-empty "values" list/);
    expect(text).toMatch(/user is only valid in ingress "from" entries/);
  });
});
