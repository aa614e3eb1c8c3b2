import type { Labels } from "../../core/labels.ts";
import { NAMESPACE_LABELS } from "./mode.ts";

/**
 * Which labels name a workload in a suggested policy.
 *
 * - With an application label (`app`, else `app.kubernetes.io/name`): that label, plus the namespace
 *   label (`k8s.ns` or `namespace`) when present, so a suggestion never lets the same app name in
 *   another namespace in.
 * - Otherwise every label except those that change while the workload stays the same: per-process
 *   and per-host facts (`proc.*`), vulnerability data (`vuln.*`), cloud placement (`cloud.*`),
 *   image references (`image*`), and pod or instance names (`k8s.pod`, `pod`, `instance`).
 *
 * Returns null when nothing stable is left (such a workload cannot be selected by labels).
 */
export function stableSelectorLabels(labels: Labels): Record<string, string> | null {
  for (const appKey of ["app", "app.kubernetes.io/name"]) {
    const app = labels[appKey];
    if (app === undefined || app === "") continue;
    const out: Record<string, string> = { [appKey]: app };
    for (const nsKey of NAMESPACE_LABELS) {
      const ns = labels[nsKey];
      if (ns !== undefined && ns !== "") {
        out[nsKey] = ns;
        break;
      }
    }
    return out;
  }
  const out: Record<string, string> = {};
  for (const key of Object.keys(labels).sort()) {
    if (isVolatile(key)) continue;
    out[key] = labels[key] as string;
  }
  return Object.keys(out).length > 0 ? out : null;
}

const VOLATILE_PREFIXES = ["proc.", "vuln.", "cloud.", "image"];
const VOLATILE_KEYS = new Set(["k8s.pod", "pod", "instance"]);

function isVolatile(key: string): boolean {
  return VOLATILE_KEYS.has(key) || VOLATILE_PREFIXES.some((p) => key.startsWith(p));
}

/** A stable text key for a label set (sorted pairs). */
export function labelsKey(labels: Labels): string {
  return JSON.stringify(
    Object.keys(labels)
      .sort()
      .map((k) => [k, labels[k]]),
  );
}

/** Whether every `k=v` of `selector` holds on `labels`. */
export function matchesAll(selector: Labels, labels: Labels): boolean {
  return Object.entries(selector).every(([k, v]) => labels[k] === v);
}
