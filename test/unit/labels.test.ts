import { describe, expect, it } from "vitest";
import { labelKeyProblem, parseLabelList } from "../../core/labels.ts";
import { parseSpiffeId } from "../../core/identity.ts";

describe("label lists", () => {
  it("parses k=v pairs", () => {
    expect(parseLabelList("app=web, tier=frontend,empty=")).toEqual({
      app: "web",
      tier: "frontend",
      empty: "",
    });
  });
  it("names the malformed item", () => {
    expect(() => parseLabelList("app=web,oops")).toThrow(/"oops" is not of the form key=value/);
    expect(() => parseLabelList("app=web,app=api")).toThrow(/"app" is given twice/);
    expect(() => parseLabelList("-bad=1")).toThrow(/label key "-bad"/);
  });
  it("rejects control characters in values", () => {
    expect(() => parseLabelList("app=we\u0001b")).toThrow(/control characters/);
  });
  it("accepts namespaced keys", () => {
    expect(labelKeyProblem("vuln.critical")).toBeNull();
    expect(labelKeyProblem("k8s.io/app")).toBeNull();
  });
});

describe("SPIFFE IDs", () => {
  it("splits trust domain and path", () => {
    expect(parseSpiffeId("spiffe://sigil.local/ns/default/sa/web")).toEqual({
      trustDomain: "sigil.local",
      path: "/ns/default/sa/web",
    });
  });
  it.each([
    "https://sigil.local/x",
    "spiffe://Sigil.Local/x",
    "spiffe://sigil.local/a//b",
    "spiffe://sigil.local/a/../b",
    "spiffe://sigil.local/a/",
    "spiffe:///x",
  ])("rejects %s", (id) => {
    expect(parseSpiffeId(id)).toBeNull();
  });
});
