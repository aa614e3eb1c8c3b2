/**
 * Workload labels: the attributes an identity is made of. Keys are namespaced by provenance
 * (for example `k8s.ns`, `proc.user`, `cloud.region`, `vuln.critical`) except orchestrator labels,
 * which keep their own names (`app`, `tier`).
 */
export type Labels = Readonly<Record<string, string>>;

/** Where a label's value came from, so a reader can tell an attested fact from a declared one. */
export type LabelProvenance =
  "join-token" | "k8s-sat" | "k8s-api" | "proc" | "metadata-file" | "static" | "scanner";

export interface AttestedLabel {
  readonly key: string;
  readonly value: string;
  readonly provenance: LabelProvenance;
}

const LABEL_KEY = /^[A-Za-z0-9]([A-Za-z0-9._/-]{0,126}[A-Za-z0-9])?$/;
const MAX_VALUE_LENGTH = 256;

/** Returns a reason the key is unusable, or null when it is a valid label key. */
export function labelKeyProblem(key: string): string | null {
  if (!LABEL_KEY.test(key)) {
    return `label key "${key}" must be 1-128 characters of letters, digits, '.', '_', '-', '/', starting and ending alphanumeric`;
  }
  return null;
}

/** Returns a reason the value is unusable, or null when it is a valid label value. */
export function labelValueProblem(key: string, value: string): string | null {
  if (value.length > MAX_VALUE_LENGTH)
    return `label "${key}" value is longer than ${MAX_VALUE_LENGTH} characters`;
  for (const ch of value) {
    const code = ch.charCodeAt(0);
    if (code < 0x20 || code === 0x7f) return `label "${key}" value contains control characters`;
  }
  return null;
}

/** Parses `k=v,k2=v2` (the CLI form). Throws with the offending item named. */
export function parseLabelList(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const raw of text.split(",")) {
    const item = raw.trim();
    if (item === "") continue;
    const eq = item.indexOf("=");
    if (eq <= 0) throw new Error(`label "${item}" is not of the form key=value`);
    const key = item.slice(0, eq);
    const value = item.slice(eq + 1);
    const problem = labelKeyProblem(key) ?? labelValueProblem(key, value);
    if (problem) throw new Error(problem);
    if (key in out) throw new Error(`label "${key}" is given twice`);
    out[key] = value;
  }
  return out;
}
