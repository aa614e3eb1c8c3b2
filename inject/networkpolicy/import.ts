import { Document, isPair, isScalar, isSeq, visit } from "yaml";
import type { AuthorizationPolicy } from "../../core/policy/index.ts";
import { formatPolicyError, validatePolicyDocument } from "../../core/policy/index.ts";
import { NetworkPolicyError, type Finding } from "./errors.ts";
import { readNetworkPolicies, type ImportSource } from "./read.ts";
import { translateNetworkPolicy } from "./translate.ts";

export interface ImportedPolicy {
  /** The NetworkPolicy it came from (`<file> document <n> (NetworkPolicy <ns>/<name>)`). */
  readonly source: string;
  readonly policy: AuthorizationPolicy;
  readonly findings: readonly Finding[];
}

export interface ImportResult {
  readonly policies: readonly ImportedPolicy[];
  /** Every finding, the passed-over objects first, then per policy in input order. */
  readonly findings: readonly Finding[];
}

/** Said once at the top of the output: how NetworkPolicy isolation lands on Sigil's defaults. */
const HEADER = [
  "Sigil AuthorizationPolicies translated from Kubernetes NetworkPolicies (sigil policy import-networkpolicy).",
  "A pod's labels are identity labels of the same key, its namespace the attested k8s.ns label.",
  "Egress: a NetworkPolicy isolating egress gives its policy an egress key, so Sigil refuses what no rule",
  "allows, as Kubernetes does. Ingress: Sigil refuses by default what no policy allows, for every workload,",
  "so pods no NetworkPolicy isolates (open in Kubernetes) accept only what some policy allows.",
  "Sigil decides TCP connections: keep the NetworkPolicies applied for UDP and SCTP.",
];

const comment = (lines: readonly string[]): string => lines.map((l) => `# ${l}`.trimEnd()).join("\n");

/** Reads every source and translates each NetworkPolicy; refuses the whole input on the first bad document. */
export function importNetworkPolicies(
  sources: readonly ImportSource[],
  defaultNamespace: string,
): ImportResult {
  const input = readNetworkPolicies(sources, defaultNamespace);
  const policies = input.policies.map((read): ImportedPolicy => {
    const { policy, findings } = translateNetworkPolicy(read, input.namespaces);
    // What is printed must be what `sigil policy validate` accepts; a label Sigil cannot carry fails here.
    const checked = validatePolicyDocument(policy, read.where);
    if (!checked.ok)
      throw new NetworkPolicyError(
        read.where,
        "",
        `translates to an invalid Sigil policy: ${checked.errors.map(formatPolicyError).join("; ")}`,
      );
    return { source: read.where, policy, findings };
  });
  return { policies, findings: [...input.skipped, ...policies.flatMap((p) => p.findings)] };
}

/** Lists of ports, values and CIDRs on one line each: a port range is many numbers. */
function flowLists(doc: Document): void {
  visit(doc, {
    Pair(_, pair) {
      if (
        isPair(pair) &&
        isScalar(pair.key) &&
        isSeq(pair.value) &&
        ["ports", "values", "cidrs"].includes(String(pair.key.value))
      )
        pair.value.flow = true;
    },
  });
}

/** The policies as one YAML stream (no anchors), each introduced by its source and findings as comments. */
export function renderImport(result: ImportResult): string {
  return result.policies
    .map((p, i) => {
      const doc = new Document(p.policy, { aliasDuplicateObjects: false });
      flowLists(doc);
      doc.commentBefore = comment([
        ...(i === 0 ? [...HEADER, ""] : []),
        `from ${p.source}`,
        ...p.findings.map((f) => `${f.kind}: ${f.field}: ${f.message}`),
      ])
        .replace(/^# ?/gm, " ")
        .replace(/^ $/gm, "");
      return doc.toString({ lineWidth: 0 });
    })
    .join("---\n");
}
