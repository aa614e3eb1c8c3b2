import { z } from "zod";
import {
  API_VERSION,
  compilePolicySet,
  formatPolicyError,
  validatePolicyDocument,
} from "../../core/policy/index.ts";
import type { CompiledPolicySet, EnforcementMode, PolicyDocument } from "../../core/policy/index.ts";

/**
 * Reads a decoded `sigil.v1.PolicySet` (core/proto/sigil/v1/policy.proto, as the xDS client hands
 * it over: snake_case, enums by name) back into policy documents and compiles them with
 * `core/policy`, so the sidecar evaluates exactly what the control plane translated.
 *
 * The control plane sends, per workload, every rule of every AuthorizationPolicy that selects it,
 * keeping the rule ids of the policy language (`<policy>/ingress/<i>`, `<policy>/egress/<i>`).
 * Rules are regrouped by policy name into documents selecting `{}` (the control plane already did
 * the selection), with each rule at its original index so decisions and flows name the same rule
 * ids as the policy files. Anything that does not fit is an error, which the xDS handler turns
 * into a NACK while the last good set stays in force.
 */

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

const OPERATORS = {
  EQUALS: "Equals",
  NOT_EQUALS: "NotEquals",
  IN: "In",
  EXISTS: "Exists",
  ABSENT: "Absent",
  PREFIX: "Prefix",
  GT: "Gt",
  LT: "Lt",
} as const;
const MTLS = z.enum(["STRICT", "PERMISSIVE", "DISABLE"]);
const uint64 = z.union([z.string().regex(/^\d+$/), z.number().int().nonnegative()]).transform(Number);

const selectorMessage = z.object({
  match_labels: z.record(z.string(), z.string()).default({}),
  match_expressions: z
    .array(
      z.object({
        key: z.string(),
        operator: z.enum(Object.keys(OPERATORS) as [keyof typeof OPERATORS]),
        values: z.array(z.string()).default([]),
      }),
    )
    .default([]),
});

const ruleMessage = z.object({
  id: z.string().min(1),
  action: z.enum(["ALLOW", "DENY", "LOG"]),
  peers: z
    .array(
      z.object({
        selector: selectorMessage.nullable().optional(),
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

const policySetMessage = z.object({
  name: z.string().min(1),
  workload: z.string().default(""),
  mode: z.enum(["ENFORCE", "OBSERVE"], { error: "enforcement mode must be ENFORCE or OBSERVE" }),
  ingress: z.array(ruleMessage).default([]),
  egress: z.array(ruleMessage).default([]),
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

type RuleMessage = z.infer<typeof ruleMessage>;
type SelectorMessage = z.infer<typeof selectorMessage>;

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

function selector(s: SelectorMessage): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (Object.keys(s.match_labels).length > 0 || s.match_expressions.length === 0)
    out.matchLabels = { ...s.match_labels };
  if (s.match_expressions.length > 0) {
    out.matchExpressions = s.match_expressions.map((e) => {
      const operator = OPERATORS[e.operator];
      if (operator === "In") return { key: e.key, operator, values: e.values };
      if (operator === "Exists" || operator === "Absent") return { key: e.key, operator };
      return { key: e.key, operator, value: e.values[0] };
    });
  }
  return out;
}

function ruleBody(rule: RuleMessage, direction: "ingress" | "egress"): Record<string, unknown> {
  const body: Record<string, unknown> = { action: rule.action.toLowerCase() };
  if (rule.peers.length > 0) {
    body[direction === "ingress" ? "from" : "to"] = rule.peers.map((p) => {
      const entry: Record<string, unknown> = p.selector ? selector(p.selector) : {};
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
  const parsed = policySetMessage.safeParse(message);
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
      list.push(ruleBody(rule, direction));
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
