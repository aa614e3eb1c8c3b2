import { describe, expect, it } from "vitest";
import type { FlowRecord } from "../../core/flow.ts";
import { compilePolicySet, parsePolicyDocuments, stringifyPolicyDocuments } from "../../core/policy/index.ts";
import type { PolicyDocument } from "../../core/policy/index.ts";
import { decideInEnforce } from "../../controlplane/visibility/simulate.ts";
import { generalizePath, isIdLike, suggestPolicies } from "../../controlplane/visibility/suggest.ts";
import { demo, demoTraffic, flow } from "../support/flows-fixtures.ts";

function parsed(yaml: string): PolicyDocument[] {
  const r = parsePolicyDocuments(yaml, "suggested.yaml");
  if (!r.ok) throw new Error(JSON.stringify(r.errors));
  return r.documents.map((d) => d.document);
}

function verdicts(docs: readonly PolicyDocument[], records: readonly FlowRecord[]): string[] {
  const set = compilePolicySet(docs);
  return records.map((r) => decideInEnforce(set, r).verdict);
}

const isRogue = (r: FlowRecord) => r.source.labels.app === "rogue";
/** The callee's decisions: what an ingress policy decides. */
const atCallee = (r: FlowRecord) => r.direction === "ingress";

describe("policy suggestion from recorded demo traffic", () => {
  const traffic = demoTraffic();
  const suggestion = suggestPolicies(traffic);
  const docs = parsed(suggestion.yaml);

  it("allows all observed legitimate traffic and denies the rogue's in enforce mode", () => {
    const legit = traffic.filter((r) => !isRogue(r));
    const rogue = traffic.filter((r) => isRogue(r) && atCallee(r));
    expect(verdicts(docs, legit)).toEqual(legit.map(() => "allow"));
    expect(rogue).toHaveLength(3);
    expect(verdicts(docs, rogue)).toEqual(rogue.map(() => "deny"));
  });

  it("never suggests a caller on its own egress allow: the callee decides", () => {
    // The rogue's sidecar lets its requests out (its egress is unrestricted) and the api refuses
    // them; with only the rogue's reports on this control plane, nothing may be suggested for it.
    const rogueEgress = traffic.filter((r) => isRogue(r) && !atCallee(r));
    expect(rogueEgress.map((r) => r.verdict)).toEqual(["allow", "allow"]);
    const onlyCaller = suggestPolicies(rogueEgress);
    expect(onlyCaller.policies).toEqual([]);
    expect(onlyCaller.summary).toMatchObject({ callerReports: 2, used: 0 });
    expect(suggestion.yaml).not.toContain("rogue");
  });

  it("is plain YAML a person can edit: no anchors or aliases even where rules share a peer", () => {
    const shared = { matchLabels: { app: "web" } };
    const doc: PolicyDocument = {
      apiVersion: "sigil.dev/v1",
      kind: "AuthorizationPolicy",
      metadata: { name: "api" },
      spec: {
        selector: shared,
        ingress: [
          { action: "allow", from: [shared], ports: [8080] },
          { action: "allow", from: [shared], ports: [9090] },
        ],
      },
    };
    const text = stringifyPolicyDocuments([doc]);
    expect(text).not.toMatch(/[&*]a\d/);
    expect(parsed(text)).toEqual([doc]);
    expect(suggestion.yaml).not.toMatch(/[&*]a\d/);
  });

  it("names peers by stable labels only, never addresses, and keeps paths generalized but exact in methods", () => {
    expect(suggestion.yaml).not.toMatch(/198\.18|cidrs|proc\.user|k8s\.pod/);
    expect(docs.map((d) => d.metadata.name)).toEqual([
      "suggested-api-demo-ingress",
      "suggested-db-demo-ingress",
    ]);
    expect(docs[0]).toMatchObject({
      spec: {
        selector: { matchLabels: { app: "api", "k8s.ns": "demo" } },
        ingress: expect.arrayContaining([
          {
            action: "allow",
            from: [{ matchLabels: { app: "web", "k8s.ns": "demo" } }],
            ports: [8080],
            http: { methods: ["GET"], paths: ["/api/orders/*", "/api/orders/*/items", "/health"] },
          },
          {
            action: "allow",
            from: [{ matchLabels: { app: "web", "k8s.ns": "demo" } }],
            ports: [8080],
            http: { methods: ["POST"], paths: ["/api/orders"] },
          },
        ]),
      },
    });
    expect(docs[1]).toMatchObject({
      spec: {
        ingress: [
          { action: "allow", from: [{ matchLabels: { app: "api", "k8s.ns": "demo" } }], ports: [5432] },
        ],
      },
    });
    expect(docs[1]!.spec).not.toHaveProperty("ingress.0.http");
    const set = compilePolicySet(docs);
    const probe = (method: string, path: string) =>
      decideInEnforce(set, flow({ from: demo.web, to: demo.api, port: 8080, http: { method, path } }))
        .verdict;
    expect(probe("GET", "/api/orders/777")).toBe("allow");
    expect(probe("POST", "/api/orders/777")).toBe("deny");
    expect(probe("DELETE", "/api/orders")).toBe("deny");
    expect(probe("GET", "/admin")).toBe("deny");
    expect(decideInEnforce(set, flow({ from: demo.web, to: demo.db, port: 5432 })).verdict).toBe("deny");
    const callerReports = traffic.filter((r) => !atCallee(r)).length;
    expect(suggestion.summary).toMatchObject({
      flows: traffic.length,
      callerReports,
      deniedInEnforce: 3,
      used: traffic.length - callerReports - 3,
    });
  });

  it("in observe mode treats would-deny flows as legitimate unless their source is excluded", () => {
    const observed = traffic.map((r) =>
      r.verdict === "deny" ? { ...r, verdict: "allow" as const, wouldDeny: true } : r,
    );
    const rogue = observed.filter((r) => isRogue(r) && atCallee(r));
    const trusting = parsed(suggestPolicies(observed).yaml);
    expect(verdicts(trusting, rogue)).toEqual(rogue.map(() => "allow"));
    const careful = suggestPolicies(observed, { exclude: [{ app: "rogue" }] });
    expect(careful.summary.excluded).toBe(rogue.length);
    expect(verdicts(parsed(careful.yaml), rogue)).toEqual(rogue.map(() => "deny"));
    const legit = observed.filter((r) => !isRogue(r));
    expect(verdicts(parsed(careful.yaml), legit)).toEqual(legit.map(() => "allow"));
  });

  it("leaves out non-mesh peers and paths that cannot be written as patterns", () => {
    const external = {
      ...flow({ from: demo.web, to: demo.api, port: 8080 }),
      source: { labels: {}, address: "198.18.5.5" },
    };
    const odd = flow({
      from: demo.web,
      to: demo.api,
      port: 8080,
      http: { method: "GET", path: "/files/a%25b" },
    });
    const s = suggestPolicies([external, odd]);
    expect(s.policies).toEqual([]);
    expect(s.summary).toMatchObject({ nonMeshPeer: 1, unrepresentablePath: 1, used: 0 });
  });

  it("recognises id-like segments and leaves words alone", () => {
    for (const id of ["123", "9f1c2e7a-1b2c-4d5e-8f90-123456789abc", "deadbeef01", "a1B2c3D4e5F6g7H8"])
      expect(isIdLike(id)).toBe(true);
    for (const word of ["orders", "v1", "api", "items", "health", "deadbeef", "customer-accounts"])
      expect(isIdLike(word)).toBe(false);
    expect(generalizePath("/v1/users/42/orders/9f1c2e7a-1b2c-4d5e-8f90-123456789abc")).toBe(
      "/v1/users/*/orders/*",
    );
  });
});
