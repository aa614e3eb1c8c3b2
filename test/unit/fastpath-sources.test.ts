import { describe, expect, it } from "vitest";
import { changedParts } from "../../sidecar/fastpath/sources.ts";
import type { EnforcerSources } from "../../sidecar/fastpath/sources.ts";

const BASE: EnforcerSources = {
  svidPem: "svid",
  keyPem: "key",
  trustDomain: "sigil.local",
  bundleJson: "{}",
  revocations: { sequence: 1, entries: [] },
  policyDocuments: [],
  mode: "enforce",
};

describe("fast-path source changes", () => {
  it("names only the parts that differ, so an update voids only what depends on them", () => {
    expect(changedParts(BASE, { ...BASE })).toEqual({ identity: false, trust: false, policy: false });
    expect(changedParts(BASE, { ...BASE, svidPem: "rotated" })).toEqual({
      identity: true,
      trust: false,
      policy: false,
    });
    expect(changedParts(BASE, { ...BASE, revocations: { sequence: 2, entries: [] } })).toEqual({
      identity: false,
      trust: true,
      policy: false,
    });
    expect(changedParts(BASE, { ...BASE, mode: "observe" })).toEqual({
      identity: false,
      trust: false,
      policy: true,
    });
  });
});
