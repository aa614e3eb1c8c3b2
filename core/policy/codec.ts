import { z } from "zod";
import type { Labels } from "../labels.ts";
import { compilePolicySet } from "./compile.ts";
import type { CompiledPolicySet } from "./compile.ts";
import type { EnforcementMode } from "./evaluate.ts";
import { formatPolicyError, validatePolicyDocument } from "./parse.ts";
import { API_VERSION } from "./schema.ts";
import type {
  AuthorizationPolicy,
  EgressRule,
  HttpMatch,
  IngressRule,
  MatchExpression,
  MtlsMode,
  PeerMatch,
  PolicyDocument,
  Selector,
} from "./schema.ts";
import { byCodeUnits } from "../code-unit-order.ts";

/**
 * The policy codec: the one place that converts between policy documents (what `compilePolicySet`
 * takes) and the `sigil.v1.PolicySet` message (core/proto/sigil/v1/policy.proto, snake_case, enums
 * by name) that carries them from the control plane to a sidecar. The control plane encodes the
 * documents selecting a workload (`encodePolicySet`); the sidecar decodes the message back into
 * documents and compiles them (`decodePolicySet`). Both directions share one operator table and
 * one set of message types, so a field added on one side cannot be forgotten on the other.
 *
 * Rules keep the ids of the policy language (`<policy>/ingress/<i>`, `<policy>/egress/<i>`). On
 * decoding they are regrouped by policy name into documents selecting `{}` (the control plane
 * already did the selection), each rule at its original index, so decisions and flows name the same
 * rule ids as the policy files. Anything that does not fit is a PolicySetResourceError naming the
 * field, which the sidecar's xDS handler turns into a NACK while the last good set stays in force.
 */

/** The policy language's label operators and their names on the wire, one table for both directions. */
const OPERATORS = {
  Equals: "EQUALS",
  NotEquals: "NOT_EQUALS",
  In: "IN",
  Exists: "EXISTS",
  Absent: "ABSENT",
  Prefix: "PREFIX",
  Gt: "GT",
  Lt: "LT",
} as const satisfies Record<MatchExpression["operator"], string>;

export type LabelOperator = (typeof OPERATORS)[MatchExpression["operator"]];

const OPERATOR_NAMES = Object.fromEntries(
  Object.entries(OPERATORS).map(([name, wire]) => [wire, name]),
) as Record<LabelOperator, MatchExpression["operator"]>;

export interface LabelSelectorMessage {
  readonly match_labels?: Readonly<Record<string, string>>;
  readonly match_expressions?: readonly {
    key: string;
    operator: LabelOperator;
    values?: readonly string[];
  }[];
}

export interface PeerMessage {
  readonly selector?: LabelSelectorMessage;
  readonly cidrs?: readonly string[];
  readonly dns_names?: readonly string[];
}

export interface HttpMessage {
  readonly methods?: readonly string[];
  readonly paths?: readonly string[];
  readonly hosts?: readonly string[];
  readonly headers?: readonly { name: string; value?: string; present?: boolean }[];
}

export interface RuleMessage {
  readonly id: string;
  readonly action: "ALLOW" | "DENY" | "LOG";
  readonly peers?: readonly PeerMessage[];
  readonly ports?: readonly number[];
  readonly http?: HttpMessage;
}

export interface PolicySetMessage {
  readonly name: string;
  readonly workload?: string;
  readonly mode: "ENFORCE" | "OBSERVE";
  readonly ingress: readonly RuleMessage[];
  readonly egress: readonly RuleMessage[];
  readonly egress_default_deny: boolean;
  readonly peer_authentication?: { mode: MtlsMode; port_level?: Readonly<Record<string, MtlsMode>> };
  readonly generation: number;
}

/** A PolicySet body without its name and generation, which depend on what else is published. */
export type PolicySetContent = Omit<PolicySetMessage, "name" | "generation">;

function selectorMessage(s: Pick<Selector, "matchLabels" | "matchExpressions">): LabelSelectorMessage {
  return {
    match_labels: { ...(s.matchLabels ?? {}) },
    match_expressions: (s.matchExpressions ?? []).map((e) => ({
      key: e.key,
      operator: OPERATORS[e.operator],
      values: e.values ?? (e.value === undefined ? [] : [e.value]),
    })),
  };
}

function peerMessage(p: PeerMatch): PeerMessage {
  const labelled = p.matchLabels !== undefined || p.matchExpressions !== undefined;
  return {
    selector: labelled ? selectorMessage(p) : undefined,
    cidrs: p.cidrs ?? [],
    dns_names: "dnsNames" in p && Array.isArray(p.dnsNames) ? (p.dnsNames as string[]) : [],
  };
}

function httpMessage(h: HttpMatch): HttpMessage {
  return {
    methods: h.methods ?? [],
    paths: h.paths ?? [],
    hosts: h.hosts ?? [],
    headers: (h.headers ?? []).map((x) => ({ name: x.name, value: x.value, present: x.present })),
  };
}

function ruleMessage(
  rule: IngressRule | EgressRule,
  peers: readonly PeerMatch[] | undefined,
  id: string,
): RuleMessage {
  return {
    id,
    action: rule.action === "allow" ? "ALLOW" : rule.action === "deny" ? "DENY" : "LOG",
    peers: (peers ?? []).map(peerMessage),
    ports: rule.ports ?? [],
    http: rule.http ? httpMessage(rule.http) : undefined,
  };
}

/**
 * The policy set of a workload with these labels and mode: every rule of every AuthorizationPolicy
 * selecting it (ids `<name>/<direction>/<i>` as in the source), egress default-deny when one of
 * them has an `egress` key, and its resolved peer authentication. The content depends only on the
 * selected documents and the mode, so workloads that select the same policies get identical
 * content and can share one resource.
 */
export function encodePolicySet(
  set: CompiledPolicySet,
  labels: Labels,
  mode: EnforcementMode,
): PolicySetContent {
  const view = set.viewFor(labels);
  const authorizations = view.documents
    .filter((d): d is AuthorizationPolicy => d.kind === "AuthorizationPolicy")
    .sort((a, b) => byCodeUnits(a.metadata.name, b.metadata.name));
  const ingress: RuleMessage[] = [];
  const egress: RuleMessage[] = [];
  for (const doc of authorizations) {
    const name = doc.metadata.name;
    (doc.spec.ingress ?? []).forEach((r, i) => ingress.push(ruleMessage(r, r.from, `${name}/ingress/${i}`)));
    (doc.spec.egress ?? []).forEach((r, i) => egress.push(ruleMessage(r, r.to, `${name}/egress/${i}`)));
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

export class PolicySetResourceError extends Error {
  constructor(
    readonly resource: string,
    readonly field: string,
    reason: string,
  ) {
    super(`PolicySet ${JSON.stringify(resource)} ${field}: ${reason}`);
    this.name = "PolicySetResourceError";
  }
}

const MTLS = z.enum(["STRICT", "PERMISSIVE", "DISABLE"]);
const uint64 = z.union([z.string().regex(/^\d+$/), z.number().int().nonnegative()]).transform(Number);

const selectorSchema = z.object({
  match_labels: z.record(z.string(), z.string()).default({}),
  match_expressions: z
    .array(
      z.object({
        key: z.string(),
        operator: z.enum(Object.keys(OPERATOR_NAMES) as [LabelOperator]),
        values: z.array(z.string()).default([]),
      }),
    )
    .default([]),
});

const ruleSchema = z.object({
  id: z.string().min(1),
  action: z.enum(["ALLOW", "DENY", "LOG"]),
  peers: z
    .array(
      z.object({
        selector: selectorSchema.nullable().optional(),
        cidrs: z.array(z.string()).default([]),
        dns_names: z.array(z.string()).default([]),
      }),
    )
    .default([]),
  ports: z.array(z.number().int()).default([]),
  http: z
    .object({
      methods: z.array(z.string()).default([]),
      paths: z.array(z.string()).default([]),
      hosts: z.array(z.string()).default([]),
      headers: z
        .array(z.object({ name: z.string(), value: z.string().optional(), present: z.boolean().optional() }))
        .default([]),
    })
    .nullable()
    .optional(),
});

const policySetSchema = z.object({
  name: z.string().min(1),
  workload: z.string().default(""),
  mode: z.enum(["ENFORCE", "OBSERVE"], { error: "enforcement mode must be ENFORCE or OBSERVE" }),
  ingress: z.array(ruleSchema).default([]),
  egress: z.array(ruleSchema).default([]),
  egress_default_deny: z.boolean().default(false),
  peer_authentication: z
    .object({
      mode: MTLS,
      port_level: z.record(z.string(), MTLS).default({}),
    })
    .nullable()
    .optional(),
  generation: uint64.default(0),
});

type DecodedRule = z.infer<typeof ruleSchema>;
type DecodedSelector = z.infer<typeof selectorSchema>;

export interface DecodedPolicySet {
  readonly name: string;
  /** The workload the control plane made this set for (SPIFFE ID or name; may be empty). */
  readonly workload: string;
  readonly generation: number;
  readonly mode: EnforcementMode;
  readonly policies: CompiledPolicySet;
  readonly documents: readonly PolicyDocument[];
}

/** The document name the set's peer-authentication mode is carried under (dots keep it off user names' usual style). */
export const PEER_AUTHENTICATION_DOCUMENT = "sigil.peer-authentication";

const RULE_ID = /^(.+)\/(ingress|egress)\/(\d+)$/;

function selectorDocument(s: DecodedSelector): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (Object.keys(s.match_labels).length > 0 || s.match_expressions.length === 0)
    out.matchLabels = { ...s.match_labels };
  if (s.match_expressions.length > 0) {
    out.matchExpressions = s.match_expressions.map((e) => {
      const operator = OPERATOR_NAMES[e.operator];
      if (operator === "In") return { key: e.key, operator, values: e.values };
      if (operator === "Exists" || operator === "Absent") return { key: e.key, operator };
      return { key: e.key, operator, value: e.values[0] };
    });
  }
  return out;
}

function ruleDocument(rule: DecodedRule, direction: "ingress" | "egress"): Record<string, unknown> {
  const body: Record<string, unknown> = { action: rule.action.toLowerCase() };
  if (rule.peers.length > 0) {
    body[direction === "ingress" ? "from" : "to"] = rule.peers.map((p) => {
      const entry: Record<string, unknown> = p.selector ? selectorDocument(p.selector) : {};
      if (p.cidrs.length > 0) entry.cidrs = p.cidrs;
      if (p.dns_names.length > 0) entry.dnsNames = p.dns_names;
      return entry;
    });
  }
  if (rule.ports.length > 0) body.ports = rule.ports;
  if (rule.http) {
    const http: Record<string, unknown> = {};
    if (rule.http.methods.length > 0) http.methods = rule.http.methods;
    if (rule.http.paths.length > 0) http.paths = rule.http.paths;
    if (rule.http.hosts.length > 0) http.hosts = rule.http.hosts;
    if (rule.http.headers.length > 0)
      http.headers = rule.http.headers.map((h) =>
        h.value !== undefined ? { name: h.name, value: h.value } : { name: h.name, present: h.present },
      );
    body.http = http;
  }
  return body;
}

interface Group {
  ingress: Record<string, unknown>[] | undefined;
  egress: Record<string, unknown>[] | undefined;
}

/** Validates and compiles one decoded PolicySet; throws PolicySetResourceError naming the field. */
export function decodePolicySet(message: unknown): DecodedPolicySet {
  const rawName =
    typeof (message as { name?: unknown } | null)?.name === "string"
      ? (message as { name: string }).name
      : "(unnamed)";
  const parsed = policySetSchema.safeParse(message);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new PolicySetResourceError(
      rawName,
      issue?.path.join(".") || "message",
      issue?.message ?? "invalid",
    );
  }
  const m = parsed.data;
  const groups = new Map<string, Group>();
  for (const direction of ["ingress", "egress"] as const) {
    m[direction].forEach((rule, at) => {
      const id = RULE_ID.exec(rule.id);
      if (!id || id[2] !== direction)
        throw new PolicySetResourceError(
          m.name,
          `${direction}[${at}].id`,
          `rule id ${JSON.stringify(rule.id)} is not "<policy>/${direction}/<index>"`,
        );
      const policy = id[1] as string;
      const index = Number(id[3]);
      let group = groups.get(policy);
      if (!group) groups.set(policy, (group = { ingress: undefined, egress: undefined }));
      const list = (group[direction] ??= []);
      if (index !== list.length)
        throw new PolicySetResourceError(
          m.name,
          `${direction}[${at}].id`,
          `rule ${rule.id} is out of order or leaves a gap (expected index ${list.length} of ${policy})`,
        );
      list.push(ruleDocument(rule, direction));
    });
  }
  const hasEgress = [...groups.values()].some((g) => g.egress !== undefined);
  if (hasEgress && !m.egress_default_deny)
    throw new PolicySetResourceError(
      m.name,
      "egress_default_deny",
      "egress rules are present, so egress must be default-deny",
    );

  const candidates: { value: unknown; origin: string }[] = [];
  for (const [name, group] of groups) {
    const spec: Record<string, unknown> = { selector: {} };
    if (group.ingress) spec.ingress = group.ingress;
    if (group.egress) spec.egress = group.egress;
    candidates.push({
      value: { apiVersion: API_VERSION, kind: "AuthorizationPolicy", metadata: { name }, spec },
      origin: `PolicySet ${m.name} policy ${name}`,
    });
  }
  if (m.egress_default_deny && !hasEgress) {
    // Default-deny egress with no rule: a document with an empty egress section says exactly that.
    candidates.push({
      value: {
        apiVersion: API_VERSION,
        kind: "AuthorizationPolicy",
        metadata: { name: "sigil.egress-default-deny" },
        spec: { selector: {}, egress: [] },
      },
      origin: `PolicySet ${m.name} egress_default_deny`,
    });
  }
  if (m.peer_authentication) {
    const spec: Record<string, unknown> = { selector: {}, mode: m.peer_authentication.mode };
    if (Object.keys(m.peer_authentication.port_level).length > 0)
      spec.portLevel = { ...m.peer_authentication.port_level };
    candidates.push({
      value: {
        apiVersion: API_VERSION,
        kind: "PeerAuthentication",
        metadata: { name: PEER_AUTHENTICATION_DOCUMENT },
        spec,
      },
      origin: `PolicySet ${m.name} peer_authentication`,
    });
  }

  const documents: PolicyDocument[] = [];
  for (const c of candidates) {
    const r = validatePolicyDocument(c.value, c.origin);
    if (!r.ok) {
      const first = r.errors[0];
      throw new PolicySetResourceError(
        m.name,
        first?.path ?? "",
        first ? formatPolicyError(first) : "invalid",
      );
    }
    documents.push(r.document);
  }
  let policies: CompiledPolicySet;
  try {
    policies = compilePolicySet(documents);
  } catch (err) {
    throw new PolicySetResourceError(m.name, "rules", (err as Error).message);
  }
  return {
    name: m.name,
    workload: m.workload,
    generation: m.generation,
    mode: m.mode === "OBSERVE" ? "observe" : "enforce",
    policies,
    documents,
  };
}
