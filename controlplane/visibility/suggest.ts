import type { FlowRecord } from "../../core/flow.ts";
import type { Labels } from "../../core/labels.ts";
import {
  API_VERSION,
  formatPolicyError,
  normalizeRequestPath,
  stringifyPolicyDocuments,
  validatePolicyDocument,
} from "../../core/policy/index.ts";
import type { AuthorizationPolicy, IngressRule } from "../../core/policy/index.ts";
import { pathPatternProblem } from "../../core/policy/path-pattern.ts";
import { labelsKey, matchesAll, stableSelectorLabels } from "./labels.ts";

/**
 * Policy suggestion: from observed flows, the smallest set of label-based AuthorizationPolicies
 * (ingress allow rules, one policy per destination workload) that allows exactly the legitimate
 * traffic seen.
 *
 * Evidence is the callee's decision only: an ingress rule says what the callee accepts, and a
 * caller's egress allow says only that the caller's own egress policy let the request out (the
 * rogue's unrestricted egress lets everything out, and the callee refuses it). Egress reports are
 * counted and left out, so a caller the callee refused is never suggested, even where only the
 * caller's report reached this control plane.
 *
 * Legitimate: allowed flows and flows let through by observe mode (would-deny), minus any whose
 * source matches an `exclude` selector. Flows denied in enforce mode are not legitimate. Peers are
 * named by labels only (see labels.ts for which), never by address: flows from or to a non-mesh
 * peer are left out and counted. Each rule names the observed port; HTTP rules list the observed
 * methods and paths, with id-like path segments (numbers, UUIDs, long hex or token strings)
 * generalized to `*`, and paths grouped by the exact set of methods seen on them so that no method
 * is allowed on a path where it was not seen. A port that carried non-HTTP traffic gets an L4 rule.
 */

export interface SuggestOptions {
  /** Sources matching any of these label sets are not legitimate (e.g. `{ app: "rogue" }`). */
  readonly exclude?: readonly Labels[];
  /** Prefix of the generated policy names (default `suggested`). */
  readonly namePrefix?: string;
}

export interface SuggestSummary {
  readonly flows: number;
  readonly used: number;
  /** The callers' egress reports: not evidence for an ingress rule (see above). */
  readonly callerReports: number;
  readonly deniedInEnforce: number;
  readonly excluded: number;
  readonly nonMeshPeer: number;
  readonly noStableLabels: number;
  readonly unrepresentablePath: number;
}

export interface Suggestion {
  readonly policies: readonly AuthorizationPolicy[];
  readonly yaml: string;
  readonly summary: SuggestSummary;
}

interface PortTraffic {
  l4: boolean;
  /** path pattern → methods seen on it */
  readonly paths: Map<string, Set<string>>;
}

interface Destination {
  readonly selector: Record<string, string>;
  /** source selector key → { selector, port → traffic } */
  readonly sources: Map<string, { selector: Record<string, string>; ports: Map<number, PortTraffic> }>;
}

export function suggestPolicies(records: readonly FlowRecord[], opts: SuggestOptions = {}): Suggestion {
  const exclude = opts.exclude ?? [];
  const counts = {
    flows: records.length,
    used: 0,
    callerReports: 0,
    deniedInEnforce: 0,
    excluded: 0,
    nonMeshPeer: 0,
    noStableLabels: 0,
    unrepresentablePath: 0,
  };
  const destinations = new Map<string, Destination>();

  for (const r of records) {
    if (r.direction === "egress") {
      counts.callerReports++;
      continue;
    }
    if (r.verdict === "deny") {
      counts.deniedInEnforce++;
      continue;
    }
    if (exclude.some((sel) => matchesAll(sel, r.source.labels))) {
      counts.excluded++;
      continue;
    }
    if (!r.source.spiffeId || !r.destination.spiffeId) {
      counts.nonMeshPeer++;
      continue;
    }
    const src = stableSelectorLabels(r.source.labels);
    const dst = stableSelectorLabels(r.destination.labels);
    if (!src || !dst) {
      counts.noStableLabels++;
      continue;
    }
    let patterns: string[] | null = null;
    if (r.http) {
      patterns = pathPatterns(r.http.path);
      if (!patterns) {
        counts.unrepresentablePath++;
        continue;
      }
    }
    counts.used++;
    const dKey = labelsKey(dst);
    let d = destinations.get(dKey);
    if (!d) {
      d = { selector: dst, sources: new Map() };
      destinations.set(dKey, d);
    }
    const sKey = labelsKey(src);
    let s = d.sources.get(sKey);
    if (!s) {
      s = { selector: src, ports: new Map() };
      d.sources.set(sKey, s);
    }
    let p = s.ports.get(r.port);
    if (!p) {
      p = { l4: false, paths: new Map() };
      s.ports.set(r.port, p);
    }
    if (!r.http || !patterns) {
      p.l4 = true;
      continue;
    }
    for (const pattern of patterns) {
      let methods = p.paths.get(pattern);
      if (!methods) p.paths.set(pattern, (methods = new Set()));
      methods.add(r.http.method);
    }
  }

  const names = new Set<string>();
  const policies = [...destinations.values()]
    .map((d) =>
      toPolicy(d, uniqueName(`${opts.namePrefix ?? "suggested"}-${nameOf(d.selector)}-ingress`, names)),
    )
    .sort((a, b) => a.metadata.name.localeCompare(b.metadata.name));
  for (const p of policies) {
    const check = validatePolicyDocument(p, p.metadata.name);
    if (!check.ok) {
      throw new Error(`suggested policy is invalid: ${check.errors.map(formatPolicyError).join("; ")}`);
    }
  }
  return { policies, yaml: policies.length > 0 ? stringifyPolicyDocuments(policies) : "", summary: counts };
}

function toPolicy(d: Destination, name: string): AuthorizationPolicy {
  // Rules with identical port and HTTP conditions are merged, their sources listed together.
  const bySignature = new Map<string, { rule: Omit<IngressRule, "from">; from: Record<string, string>[] }>();
  for (const s of d.sources.values()) {
    for (const [port, traffic] of s.ports) {
      for (const rule of rulesFor(port, traffic)) {
        const sig = JSON.stringify(rule);
        let entry = bySignature.get(sig);
        if (!entry) bySignature.set(sig, (entry = { rule, from: [] }));
        entry.from.push(s.selector);
      }
    }
  }
  const ingress = [...bySignature.entries()]
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([, { rule, from }]) => ({
      action: "allow" as const,
      from: from
        .sort((a, b) => labelsKey(a).localeCompare(labelsKey(b)))
        .map((matchLabels) => ({ matchLabels })),
      ...(rule.ports ? { ports: rule.ports } : {}),
      ...(rule.http ? { http: rule.http } : {}),
    }));
  return {
    apiVersion: API_VERSION,
    kind: "AuthorizationPolicy",
    metadata: { name },
    spec: { selector: { matchLabels: d.selector }, ingress },
  } as AuthorizationPolicy;
}

function rulesFor(port: number, traffic: PortTraffic): Omit<IngressRule, "from">[] {
  const ports = port > 0 ? [port] : undefined;
  if (traffic.l4 || traffic.paths.size === 0) return [{ action: "allow", ...(ports ? { ports } : {}) }];
  const byMethods = new Map<string, string[]>();
  for (const [path, methods] of traffic.paths) {
    const key = [...methods].sort().join(" ");
    const list = byMethods.get(key) ?? [];
    list.push(path);
    byMethods.set(key, list);
  }
  return [...byMethods.entries()].map(([methods, paths]) => ({
    action: "allow",
    ...(ports ? { ports } : {}),
    http: { methods: methods.split(" "), paths: paths.sort() },
  })) as Omit<IngressRule, "from">[];
}

/**
 * The policy path patterns for one observed request path: its normalized form (both readings when
 * `;` parameters make them differ), id-like segments replaced by `*`. Null when a reading cannot be
 * written as a pattern (for example a decoded `%` or a literal `*` in a segment).
 */
export function pathPatterns(rawPath: string): string[] | null {
  const n = normalizeRequestPath(rawPath);
  if (!n.ok) return null;
  const readings = n.withoutParams === undefined ? [n.path] : [n.path, n.withoutParams];
  const out: string[] = [];
  for (const reading of readings) {
    const pattern = generalizePath(reading);
    if (pathPatternProblem(pattern) !== null) return null;
    if (!out.includes(pattern)) out.push(pattern);
  }
  return out;
}

export function generalizePath(path: string): string {
  return path
    .split("/")
    .map((seg) => (isIdLike(seg) ? "*" : seg))
    .join("/");
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export function isIdLike(segment: string): boolean {
  if (segment === "") return false;
  if (/^\d+$/.test(segment)) return true;
  if (UUID.test(segment)) return true;
  if (/^[0-9a-f]{8,}$/i.test(segment) && /\d/.test(segment)) return true;
  // Opaque tokens: long runs of letters and digits mixed, as session ids and slugs with hashes are.
  return /^[A-Za-z0-9_-]{16,}$/.test(segment) && /\d/.test(segment) && /[A-Za-z]/.test(segment);
}

function nameOf(selector: Record<string, string>): string {
  const base = selector.app ?? selector["app.kubernetes.io/name"] ?? Object.values(selector).join("-");
  const ns = selector["k8s.ns"] ?? selector.namespace;
  const raw = ns && ns !== base ? `${base}-${ns}` : base;
  const clean = raw
    .toLowerCase()
    .replace(/[^a-z0-9.-]+/g, "-")
    .replace(/^[^a-z0-9]+|[^a-z0-9]+$/g, "");
  return clean.slice(0, 200) || "workload";
}

function uniqueName(name: string, taken: Set<string>): string {
  let candidate = name;
  for (let i = 2; taken.has(candidate); i++) candidate = `${name}-${i}`;
  taken.add(candidate);
  return candidate;
}
