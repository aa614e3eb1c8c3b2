import type { Labels } from "../labels.ts";
import { labelNumber } from "./numeric.ts";
import type { MatchExpression, Selector } from "./schema.ts";

/** A selector compiled to a flat list of label tests; an empty list selects everything. */
export type LabelTest = (labels: Labels) => boolean;

const has = (labels: Labels, key: string): boolean => Object.prototype.hasOwnProperty.call(labels, key);

function expressionTest(e: MatchExpression): LabelTest {
  const { key } = e;
  switch (e.operator) {
    case "Equals": {
      const value = e.value;
      return (l) => has(l, key) && l[key] === value;
    }
    case "NotEquals": {
      const value = e.value;
      return (l) => !has(l, key) || l[key] !== value;
    }
    case "In": {
      const values = new Set(e.values);
      return (l) => has(l, key) && values.has(l[key] as string);
    }
    case "Exists":
      return (l) => has(l, key);
    case "Absent":
      return (l) => !has(l, key);
    case "Prefix": {
      const prefix = e.value ?? "";
      return (l) => has(l, key) && (l[key] as string).startsWith(prefix);
    }
    case "Gt":
    case "Lt": {
      // Validation guarantees a decimal bound. A label that is not a number matches neither.
      const bound = labelNumber(e.value ?? "") ?? Number.NaN;
      const above = e.operator === "Gt";
      return (l) => {
        const n = has(l, key) ? labelNumber(l[key] as string) : null;
        return n !== null && (above ? n > bound : n < bound);
      };
    }
  }
}

/** Compiles a selector into one predicate. */
export function compileSelector(selector: Selector): LabelTest {
  const tests: LabelTest[] = [];
  for (const [key, value] of Object.entries(selector.matchLabels ?? {}))
    tests.push((l) => has(l, key) && l[key] === value);
  for (const e of selector.matchExpressions ?? []) tests.push(expressionTest(e));
  if (tests.length === 0) return () => true;
  if (tests.length === 1) return tests[0] as LabelTest;
  return (l) => {
    for (const t of tests) if (!t(l)) return false;
    return true;
  };
}

/** Whether `labels` satisfy `selector` (all matchLabels pairs and all matchExpressions). */
export function selectorMatches(selector: Selector, labels: Labels): boolean {
  return compileSelector(selector)(labels);
}

/** How specific a selector is: the number of conditions it states. Used to rank PeerAuthentications. */
export function selectorSpecificity(selector: Selector): number {
  return Object.keys(selector.matchLabels ?? {}).length + (selector.matchExpressions?.length ?? 0);
}
