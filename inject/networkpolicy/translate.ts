import { createHash } from "node:crypto";
import type { LabelSelector } from "kubernetes-types/meta/v1.js";
import type { NetworkPolicyPeer, NetworkPolicyPort } from "kubernetes-types/networking/v1.js";
import type { AuthorizationPolicy, EgressRule, IngressRule, PeerMatch } from "../../core/policy/index.ts";
import { API_VERSION } from "../../core/policy/index.ts";
import { CidrProblem, ipBlockCidrs } from "./cidrs.ts";
import { NetworkPolicyError, type Finding } from "./errors.ts";
import { rulePorts } from "./ports.ts";
import type { ReadPolicy } from "./read.ts";
import {
  NAMESPACE_LABEL,
  namespaceMatch,
  podMatchers,
  SelectorProblem,
  type LabelMatchers,
} from "./selectors.ts";

/**
 * One NetworkPolicy as one Sigil AuthorizationPolicy (`netpol.<namespace>.<name>`), each of its rules
 * an `allow` rule at the same index. Whatever cannot be said exactly is said narrower and reported:
 * a peer or port left out, never a rule widened. Isolation maps onto Sigil's defaults: `Egress` in
 * policyTypes gives the policy an `egress` key (Sigil then refuses what no rule allows, as
 * Kubernetes does), and ingress is refused by default in Sigil whether or not `Ingress` is listed.
 */

export interface Translated {
  readonly policy: AuthorizationPolicy;
  readonly findings: readonly Finding[];
}

type Namespaces = ReadonlyMap<string, Readonly<Record<string, string>>> | null;
type Direction = "ingress" | "egress";

const MAX_NAME = 253;

/** `netpol.<ns>.<name>`, shortened with a digest when longer than a policy name may be. */
export function policyName(namespace: string, name: string): string {
  const full = `netpol.${namespace}.${name}`;
  if (full.length <= MAX_NAME) return full;
  const digest = createHash("sha256").update(full).digest("hex").slice(0, 16);
  return `${full.slice(0, MAX_NAME - 17).replace(/[.-]+$/, "")}-${digest}`;
}

class PolicyTranslation {
  readonly findings: Finding[] = [];

  constructor(
    private readonly read: ReadPolicy,
    private readonly namespaces: Namespaces,
  ) {}

  finding(kind: Finding["kind"], field: string, message: string): void {
    this.findings.push({ kind, document: this.read.where, field, message });
  }

  matchers(selector: LabelSelector, field: string): LabelMatchers {
    try {
      return podMatchers(selector);
    } catch (err) {
      if (err instanceof SelectorProblem)
        throw new NetworkPolicyError(this.read.where, `${field}.${err.field}`, err.reason);
      throw err;
    }
  }

  /** One peer as Sigil `from`/`to` entries; none when it can match nothing Sigil can name. */
  peer(p: NetworkPolicyPeer, field: string, direction: Direction): PeerMatch[] {
    if (p.ipBlock) {
      let cidrs: string[];
      try {
        cidrs = ipBlockCidrs(p.ipBlock.cidr, p.ipBlock.except);
      } catch (err) {
        if (err instanceof CidrProblem)
          throw new NetworkPolicyError(this.read.where, `${field}.ipBlock.${err.field}`, err.reason);
        throw err;
      }
      this.finding(
        "note",
        `${field}.ipBlock`,
        direction === "ingress"
          ? "matches peers outside the mesh only (mesh workloads are matched by identity), and they connect without mTLS: they reach the pod only on ports a PeerAuthentication makes PERMISSIVE"
          : "matches destinations outside the mesh only (mesh workloads are matched by identity)",
      );
      return cidrs.length === 0 ? [] : [{ cidrs }];
    }
    const pods = p.podSelector ? this.matchers(p.podSelector, `${field}.podSelector`) : undefined;
    if (!p.namespaceSelector) {
      const own = { ...pods?.matchLabels, [NAMESPACE_LABEL]: this.read.namespace };
      return [withExpressions(own, pods?.matchExpressions ?? [])];
    }
    const ns = namespaceMatch(p.namespaceSelector, this.namespaces);
    const nsField = `${field}.namespaceSelector`;
    if (ns.kind === "nothing") return [];
    if (ns.kind === "unresolved") {
      this.finding(
        "approximated",
        nsField,
        "peer left out: namespace labels are not identity labels, and no Namespace objects were given to resolve them (add `kubectl get namespaces -o yaml` to the input)",
      );
      return [];
    }
    if (ns.kind === "resolved")
      this.finding(
        "approximated",
        nsField,
        `resolved to the namespaces given now (${ns.names.join(", ")}): a namespace labelled so later is not included until imported again`,
      );
    return [
      withExpressions({ ...pods?.matchLabels }, [...ns.expressions, ...(pods?.matchExpressions ?? [])]),
    ];
  }

  /** One rule's peers and ports; null when it is left out (it would allow nothing Sigil can name). */
  rule(
    direction: Direction,
    peers: readonly NetworkPolicyPeer[] | undefined,
    ports: readonly NetworkPolicyPort[] | undefined,
    field: string,
  ): { peers?: PeerMatch[]; ports?: number[] } | null {
    const translated = rulePorts(ports);
    for (const loss of translated.lost) this.finding("approximated", `${field}.${loss.field}`, loss.message);
    if (translated.kind === "none") {
      this.finding(
        "approximated",
        field,
        "rule left out: none of its ports is a TCP port number Sigil can name",
      );
      return null;
    }
    const portList = translated.kind === "listed" ? { ports: translated.ports } : {};
    // No peers listed: every peer, as Sigil reads a rule without from/to.
    if (peers === undefined || peers.length === 0) return portList;
    const key = direction === "ingress" ? "from" : "to";
    const entries = peers.flatMap((p, i) => this.peer(p, `${field}.${key}[${i}]`, direction));
    if (entries.length === 0) {
      this.finding(
        "approximated",
        field,
        `rule left out: none of its ${key} peers matches anything Sigil can name`,
      );
      return null;
    }
    return { peers: entries, ...portList };
  }
}

function withExpressions(
  matchLabels: Record<string, string>,
  expressions: LabelMatchers["matchExpressions"],
): PeerMatch {
  return expressions.length === 0 ? { matchLabels } : { matchLabels, matchExpressions: expressions };
}

/** Kubernetes' default: Ingress always, Egress when the policy has egress rules. */
function policyTypesOf(spec: NonNullable<ReadPolicy["policy"]["spec"]>): string[] {
  if (spec.policyTypes && spec.policyTypes.length > 0) return spec.policyTypes;
  return ["Ingress", ...((spec.egress ?? []).length > 0 ? ["Egress"] : [])];
}

export function translateNetworkPolicy(read: ReadPolicy, namespaces: Namespaces): Translated {
  const t = new PolicyTranslation(read, namespaces);
  const spec = read.policy.spec ?? { podSelector: {} };
  const types = policyTypesOf(spec);
  const target = t.matchers(spec.podSelector, "spec.podSelector");
  const selector = {
    matchLabels: { ...target.matchLabels, [NAMESPACE_LABEL]: read.namespace },
    ...(target.matchExpressions.length > 0 ? { matchExpressions: target.matchExpressions } : {}),
  };
  const body: { ingress?: IngressRule[]; egress?: EgressRule[] } = {};
  for (const [direction, type] of [
    ["ingress", "Ingress"],
    ["egress", "Egress"],
  ] as const) {
    const rules = spec[direction] ?? [];
    if (!types.includes(type)) {
      if (rules.length > 0)
        t.finding(
          "note",
          `spec.${direction}`,
          `ignored, as Kubernetes ignores it: policyTypes does not list ${type}`,
        );
      continue;
    }
    const translated = rules.flatMap((r, i) => {
      const peers = "from" in r ? r.from : "to" in r ? r.to : undefined;
      const rule = t.rule(direction, peers, r.ports, `spec.${direction}[${i}]`);
      return rule === null ? [] : [rule];
    });
    if (direction === "ingress")
      body.ingress = translated.map(({ peers, ports }) => ({
        action: "allow",
        ...(peers ? { from: peers } : {}),
        ...(ports ? { ports } : {}),
      }));
    else
      body.egress = translated.map(({ peers, ports }) => ({
        action: "allow",
        ...(peers ? { to: peers } : {}),
        ...(ports ? { ports } : {}),
      }));
  }
  return {
    policy: {
      apiVersion: API_VERSION,
      kind: "AuthorizationPolicy",
      metadata: { name: policyName(read.namespace, read.policy.metadata?.name ?? "") },
      spec: { selector, ...body },
    },
    findings: t.findings,
  };
}
