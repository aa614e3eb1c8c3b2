import { createHash } from "node:crypto";
import type { Labels } from "../../core/labels.ts";
import { httpRulesOnPort, peerAuthenticationMode } from "../../core/policy/index.ts";
import type {
  AuthorizationPolicy,
  CompiledPolicySet,
  EgressRule,
  HttpMatch,
  IngressRule,
  MatchExpression,
  MtlsMode,
  PeerMatch,
  Selector,
} from "../../core/policy/index.ts";
import type { EnforcementMode } from "../visibility/mode.ts";
import type { LabelOperator, LabelSelector, PolicySetSpec, RuleSpec, WorkloadSpec } from "../xds/sigil.ts";
import type { Registration } from "../../core/registration.ts";

/**
 * Pure translation of what the control plane knows (compiled policies, a workload's labels and
 * mode, its registration) into the bodies of Sigil's xDS resources. No I/O, no state: the mesh
 * publisher decides when to call it and what to share.
 */

/** A PolicySet body without its name and generation, which depend on what else is published. */
export type PolicySetContent = Omit<PolicySetSpec, "name" | "generation">;

const OPERATORS: Record<MatchExpression["operator"], LabelOperator> = {
  Equals: "EQUALS",
  NotEquals: "NOT_EQUALS",
  In: "IN",
  Exists: "EXISTS",
  Absent: "ABSENT",
  Prefix: "PREFIX",
  Gt: "GT",
  Lt: "LT",
};

function selectorSpec(s: Pick<Selector, "matchLabels" | "matchExpressions">): LabelSelector {
  return {
    match_labels: { ...(s.matchLabels ?? {}) },
    match_expressions: (s.matchExpressions ?? []).map((e) => ({
      key: e.key,
      operator: OPERATORS[e.operator],
      values: e.values ?? (e.value === undefined ? [] : [e.value]),
    })),
  };
}

function peerSpec(p: PeerMatch): NonNullable<RuleSpec["peers"]>[number] {
  const labelled = p.matchLabels !== undefined || p.matchExpressions !== undefined;
  return {
    selector: labelled ? selectorSpec(p) : undefined,
    cidrs: p.cidrs ?? [],
    dns_names: "dnsNames" in p && Array.isArray(p.dnsNames) ? (p.dnsNames as string[]) : [],
  };
}

function httpSpec(h: HttpMatch): NonNullable<RuleSpec["http"]> {
  return {
    methods: h.methods ?? [],
    paths: h.paths ?? [],
    hosts: h.hosts ?? [],
    headers: (h.headers ?? []).map((x) => ({ name: x.name, value: x.value, present: x.present })),
  };
}

function ruleSpec(
  rule: IngressRule | EgressRule,
  peers: readonly PeerMatch[] | undefined,
  id: string,
): RuleSpec {
  return {
    id,
    action: rule.action === "allow" ? "ALLOW" : rule.action === "deny" ? "DENY" : "LOG",
    peers: (peers ?? []).map(peerSpec),
    ports: rule.ports ?? [],
    http: rule.http ? httpSpec(rule.http) : undefined,
  };
}

/**
 * The policy set of a workload with these labels and mode: every rule of every AuthorizationPolicy
 * selecting it (ids `<name>/<direction>/<i>` as in the source), egress default-deny when one of
 * them has an `egress` key, and its resolved peer authentication. The content depends only on the
 * selected documents and the mode, so workloads that select the same policies get identical
 * content and can share one resource.
 */
export function policySetContent(
  set: CompiledPolicySet,
  labels: Labels,
  mode: EnforcementMode,
): PolicySetContent {
  const view = set.viewFor(labels);
  const authorizations = view.documents
    .filter((d): d is AuthorizationPolicy => d.kind === "AuthorizationPolicy")
    .sort((a, b) => a.metadata.name.localeCompare(b.metadata.name));
  const ingress: RuleSpec[] = [];
  const egress: RuleSpec[] = [];
  for (const doc of authorizations) {
    const name = doc.metadata.name;
    (doc.spec.ingress ?? []).forEach((r, i) => ingress.push(ruleSpec(r, r.from, `${name}/ingress/${i}`)));
    (doc.spec.egress ?? []).forEach((r, i) => egress.push(ruleSpec(r, r.to, `${name}/egress/${i}`)));
  }
  const pa = view.peerAuthentication;
  const portLevel: Record<string, MtlsMode> = {};
  for (const [port, m] of pa?.portLevel ?? []) portLevel[String(port)] = m;
  return {
    workload: "",
    mode: mode === "observe" ? "OBSERVE" : "ENFORCE",
    ingress,
    egress,
    egress_default_deny: view.egressRestricted,
    peer_authentication: { mode: pa?.mode ?? "STRICT", port_level: portLevel },
  };
}

/** A stable digest of a PolicySet's content: equal content, equal key. */
export function contentKey(content: PolicySetContent): string {
  return createHash("sha256").update(JSON.stringify(content)).digest("hex").slice(0, 20);
}

/**
 * A workload's entry in the peer directory. Each registered app port says how callers reach it: the
 * L4 fast path only where the sidecar enforces it in the handshake and policy needs neither HTTP
 * rules nor a STRICT mTLS hop on that port (the same rule as the sidecar's own port choice),
 * otherwise through the sidecars' mTLS proxy.
 */
export function workloadSpec(
  set: CompiledPolicySet,
  w: { name: string; spiffeId: string; labels: Labels; registration: Registration | null },
): WorkloadSpec {
  const r = w.registration;
  return {
    name: w.name,
    spiffe_id: w.spiffeId,
    labels: { ...w.labels },
    addresses: r?.addresses ?? [],
    inbound_port: r?.inboundPort ?? 0,
    ports: (r?.appPorts ?? []).map((port) => {
      const http = httpRulesOnPort(set, w.labels, port, "ingress");
      const mtls = peerAuthenticationMode(set, w.labels, port);
      const fast = r?.fastPathPorts.includes(port) === true && !http && mtls !== "STRICT";
      return {
        port,
        protocol: http ? "HTTP" : "TCP",
        data_path: fast ? "L4_FAST_PATH" : "L7_PROXY",
        mtls,
      };
    }),
  };
}

/** The directory name of a workload: the last segment(s) of its SPIFFE ID path. */
export function workloadName(spiffeId: string): string {
  const path = spiffeId.replace(/^spiffe:\/\/[^/]+\//, "");
  const k8s = /^ns\/([^/]+)\/sa\/([^/]+)$/.exec(path);
  if (k8s) return `${k8s[2]}.${k8s[1]}`;
  const join = /^workload\/([^/]+)$/.exec(path);
  return join?.[1] ?? path;
}
