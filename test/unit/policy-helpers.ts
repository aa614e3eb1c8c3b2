import type { Peer } from "../../core/identity.ts";
import type { Labels } from "../../core/labels.ts";
import { compilePolicySet, formatPolicyError, parsePolicyDocuments } from "../../core/policy/index.ts";
import type { CompiledPolicySet } from "../../core/policy/index.ts";

/** Compiles YAML or fails the test with every validation error spelled out. */
export function setFrom(yaml: string): CompiledPolicySet {
  const r = parsePolicyDocuments(yaml, "test.yaml");
  if (!r.ok) throw new Error(r.errors.map(formatPolicyError).join("\n"));
  return compilePolicySet(r.documents.map((d) => d.document));
}

export function workload(labels: Labels, name = labels.app ?? "anon"): Peer {
  return {
    kind: "workload",
    identity: {
      spiffeId: `spiffe://sigil.local/workload/${name}`,
      trustDomain: "sigil.local",
      labels,
      serial: "01",
      notAfter: new Date(Date.now() + 3_600_000),
    },
  };
}

export function external(address: string, dnsName?: string): Peer {
  return dnsName === undefined ? { kind: "external", address } : { kind: "external", address, dnsName };
}
