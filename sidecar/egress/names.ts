import type { Labels } from "../../core/labels.ts";
import type { CompiledPolicySet } from "../../core/policy/index.ts";
import { canonicalName } from "../../core/policy/dns.ts";
import { policiesFor } from "../../core/policy/index.ts";

/**
 * The exact DNS names this workload's egress allow rules name: the ones worth resolving before a
 * connection is decided, whatever name the application will claim on it. Wildcards are left out
 * (only the concrete name a client gives can be resolved). Cached per policy set and labels object.
 */

const cache = new WeakMap<CompiledPolicySet, { labels: Labels; names: readonly string[] }>();

export function egressNamesOf(set: CompiledPolicySet, labels: Labels): readonly string[] {
  const hit = cache.get(set);
  if (hit !== undefined && hit.labels === labels) return hit.names;
  const names = new Set<string>();
  for (const doc of policiesFor(set, labels)) {
    if (doc.kind !== "AuthorizationPolicy") continue;
    for (const rule of doc.spec.egress ?? []) {
      if (rule.action !== "allow") continue;
      for (const to of rule.to ?? [])
        for (const name of to.dnsNames ?? []) if (!name.startsWith("*.")) names.add(canonicalName(name));
    }
  }
  const result = [...names];
  cache.set(set, { labels, names: result });
  return result;
}
