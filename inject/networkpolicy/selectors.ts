import type { LabelSelector, LabelSelectorRequirement } from "kubernetes-types/meta/v1.js";
import { labelKeyProblem, labelValueProblem } from "../../core/labels.ts";
import type { MatchExpression } from "../../core/policy/index.ts";

/**
 * Kubernetes label selectors as Sigil matchers. A pod's labels are identity labels of the same key
 * (as the operator or the orchestrator set them); its namespace is the attested `k8s.ns` label.
 * Namespaces themselves have no labels in an identity, so a namespace selector is exact only on
 * `kubernetes.io/metadata.name` (the namespace's name); on other labels it can only be resolved
 * against the Namespace objects given now.
 */

export const NAMESPACE_LABEL = "k8s.ns";
const NAME_LABEL = "kubernetes.io/metadata.name";
/** Identity labels Sigil derives or attests itself: a pod label of this key is not what a selector would see. */
const RESERVED = /^(k8s\.(ns|sa|pod)$|provenance\.sigil\.dev\/)/;

export class SelectorProblem extends Error {
  constructor(
    /** Relative to the selector (`matchLabels.app`, `matchExpressions[1].key`). */
    readonly field: string,
    readonly reason: string,
  ) {
    super(`${field}: ${reason}`);
  }
}

export interface LabelMatchers {
  readonly matchLabels: Record<string, string>;
  readonly matchExpressions: MatchExpression[];
}

function checkLabel(key: string, value: string | undefined, field: string): void {
  if (RESERVED.test(key))
    throw new SelectorProblem(
      field,
      `"${key}" is an identity label Sigil sets itself, not a pod label a selector can name`,
    );
  const problem = labelKeyProblem(key) ?? (value === undefined ? null : labelValueProblem(key, value));
  if (problem) throw new SelectorProblem(field, problem);
}

/** One requirement as Sigil expressions: NotIn becomes one NotEquals per value (absent or none of them). */
function expressionsOf(key: string, r: LabelSelectorRequirement): MatchExpression[] | "nothing" {
  const values = r.values ?? [];
  switch (r.operator) {
    case "In":
      return [{ key, operator: "In", values: [...values] }];
    case "NotIn":
      return values.map((value) => ({ key, operator: "NotEquals", value }));
    case "Exists":
      return [{ key, operator: "Exists" }];
    default:
      // DoesNotExist; for the namespace name, which every namespace has, it matches nothing.
      return key === NAMESPACE_LABEL ? "nothing" : [{ key, operator: "Absent" }];
  }
}

/** A pod selector's matchers, key for key. */
export function podMatchers(selector: LabelSelector): LabelMatchers {
  const matchLabels: Record<string, string> = {};
  for (const [key, value] of Object.entries(selector.matchLabels ?? {})) {
    checkLabel(key, value, `matchLabels.${key}`);
    matchLabels[key] = value;
  }
  const matchExpressions = (selector.matchExpressions ?? []).flatMap((r, i) => {
    checkLabel(r.key, undefined, `matchExpressions[${i}].key`);
    (r.values ?? []).forEach((v, j) => checkLabel(r.key, v, `matchExpressions[${i}].values[${j}]`));
    const e = expressionsOf(r.key, r);
    return e === "nothing" ? [] : e;
  });
  return { matchLabels, matchExpressions };
}

/** Whether Kubernetes would select an object with these labels. */
export function selects(selector: LabelSelector, labels: Readonly<Record<string, string>>): boolean {
  for (const [k, v] of Object.entries(selector.matchLabels ?? {})) if (labels[k] !== v) return false;
  return (selector.matchExpressions ?? []).every((r) => {
    const has = Object.hasOwn(labels, r.key);
    const value = labels[r.key];
    const listed = value !== undefined && (r.values ?? []).includes(value);
    if (r.operator === "In") return has && listed;
    if (r.operator === "NotIn") return !has || !listed;
    if (r.operator === "Exists") return has;
    return !has;
  });
}

/**
 * The namespaces a namespaceSelector names, as `k8s.ns` expressions:
 * - `exact`: every namespace (`{}`), or only the namespace's name is tested;
 * - `resolved`: other labels, resolved against the Namespace objects given (those that exist now);
 * - `unresolved`: other labels and no Namespace objects to resolve them against.
 * `nothing` means no namespace can match.
 */
export type NamespaceMatch =
  | { readonly kind: "exact"; readonly expressions: MatchExpression[] }
  | { readonly kind: "resolved"; readonly expressions: MatchExpression[]; readonly names: string[] }
  | { readonly kind: "unresolved" }
  | { readonly kind: "nothing" };

export function namespaceMatch(
  selector: LabelSelector,
  namespaces: ReadonlyMap<string, Readonly<Record<string, string>>> | null,
): NamespaceMatch {
  const keys = [
    ...Object.keys(selector.matchLabels ?? {}),
    ...(selector.matchExpressions ?? []).map((r) => r.key),
  ];
  if (keys.length === 0)
    return { kind: "exact", expressions: [{ key: NAMESPACE_LABEL, operator: "Exists" }] };
  if (keys.every((k) => k === NAME_LABEL)) {
    const expressions: MatchExpression[] = Object.values(selector.matchLabels ?? {}).map((value) => ({
      key: NAMESPACE_LABEL,
      operator: "Equals",
      value,
    }));
    for (const r of selector.matchExpressions ?? []) {
      const e = expressionsOf(NAMESPACE_LABEL, r);
      if (e === "nothing") return { kind: "nothing" };
      expressions.push(...e);
    }
    // NotEquals also holds where k8s.ns is absent (a workload that is no pod): only pods are meant.
    if (expressions.some((e) => e.operator === "NotEquals"))
      expressions.unshift({ key: NAMESPACE_LABEL, operator: "Exists" });
    return { kind: "exact", expressions };
  }
  if (namespaces === null) return { kind: "unresolved" };
  const names = [...namespaces].filter(([, labels]) => selects(selector, labels)).map(([name]) => name);
  names.sort();
  return names.length === 0
    ? { kind: "nothing" }
    : { kind: "resolved", names, expressions: [{ key: NAMESPACE_LABEL, operator: "In", values: names }] };
}
