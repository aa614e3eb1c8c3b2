import type { AttestedLabel, LabelProvenance, Labels } from "./labels.ts";

/**
 * Who vouches for a label, in the classes policy reasons about, and the order in which they win a
 * key that more than one source sets:
 *
 * | class          | sources                                  | trusted because                           |
 * | -------------- | ---------------------------------------- | ----------------------------------------- |
 * | `operator`     | `static` (API/CLI), `join-token` labels  | the operator set them, authenticated      |
 * | `orchestrator` | `k8s-sat` (namespace, service account)   | the cluster signed them (verified token)  |
 * |                | `k8s-api` (pod labels, from the API)     | the API server said so, over verified TLS |
 * | `scanner`      | `scanner` (findings posted to the API)   | the operator's scanner, authenticated     |
 * | `node`         | `proc`, `metadata-file`                  | only as far as the node's sidecar is      |
 *
 * Node-reported facts are what the workload's own sidecar says: a compromised node or a stolen join
 * token can report anything, so they lose every key another source sets, and a policy that must not
 * rest on them asks for a class with `provenance.sigil.dev/<key>`.
 */
export type ProvenanceClass = "operator" | "orchestrator" | "scanner" | "node";

export const PROVENANCE_CLASS: Readonly<Record<LabelProvenance, ProvenanceClass>> = {
  static: "operator",
  "join-token": "operator",
  "k8s-sat": "orchestrator",
  "k8s-api": "orchestrator",
  scanner: "scanner",
  proc: "node",
  "metadata-file": "node",
};

/** Precedence: a key set by several sources takes the value of the first class here. */
const PRECEDENCE: readonly ProvenanceClass[] = ["operator", "orchestrator", "scanner", "node"];

/** Prefix of the derived keys that state a label's provenance class. Reserved: no source may set one. */
export const PROVENANCE_KEY_PREFIX = "provenance.sigil.dev/";

/** Longest label key (as in labels.ts): a derived key longer than this is not produced. */
const MAX_KEY_LENGTH = 128;

/** A reason `key` cannot be set by any label source, or null. */
export function reservedKeyProblem(key: string): string | null {
  return key.startsWith(PROVENANCE_KEY_PREFIX)
    ? `label key "${key}" is reserved: ${PROVENANCE_KEY_PREFIX}<key> states the provenance of <key> and is derived, never set`
    : null;
}

/**
 * One label per key from several sources, by precedence (operator, orchestrator, scanner, node);
 * within a class, the first source given wins. Sorted by key.
 */
export function mergeByProvenance(labels: readonly AttestedLabel[]): AttestedLabel[] {
  const out = new Map<string, AttestedLabel>();
  for (const cls of PRECEDENCE) {
    for (const l of labels) {
      if (PROVENANCE_CLASS[l.provenance] === cls && !out.has(l.key)) out.set(l.key, l);
    }
  }
  return [...out.values()].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
}

/**
 * The labels policy selects on: each key with its value, and `provenance.sigil.dev/<key>` with
 * the class that vouched for it (omitted when that key would exceed the label key length, so a
 * requirement on it fails closed).
 */
export function labelsWithProvenance(labels: readonly AttestedLabel[]): Labels {
  const out: Record<string, string> = {};
  for (const l of labels) out[l.key] = l.value;
  for (const l of labels) {
    const key = PROVENANCE_KEY_PREFIX + l.key;
    if (key.length <= MAX_KEY_LENGTH) out[key] = PROVENANCE_CLASS[l.provenance];
  }
  return out;
}

/** The labels without the derived provenance keys (what a certificate itself carries). */
export function withoutProvenance(labels: Labels): Labels {
  return Object.fromEntries(Object.entries(labels).filter(([k]) => !k.startsWith(PROVENANCE_KEY_PREFIX)));
}
