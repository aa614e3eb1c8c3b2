import { z } from "zod";
import { labelKeyProblem, labelValueProblem } from "../labels.ts";
import { USER_CLAIM_KEYS } from "../user.ts";
import { parseCidr } from "./address.ts";
import { dnsPatternProblem } from "./dns.ts";
import { numericBoundProblem } from "./numeric.ts";
import { pathPatternProblem } from "./path-pattern.ts";

/**
 * The policy language as zod schemas: the single source of truth for document shapes. Every check that can
 * be tied to one field lives here so that its error carries that field's path (and, from YAML, its line).
 */

export const API_VERSION = "sigil.dev/v1";

const NAME = /^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$/;
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const HTTP_METHOD = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

const labelKey = z.string().superRefine((value, ctx) => {
  const problem = labelKeyProblem(value);
  if (problem) ctx.addIssue({ code: "custom", message: problem });
});

const labelMap = z.record(z.string(), z.string()).superRefine((map, ctx) => {
  for (const [key, value] of Object.entries(map)) {
    const problem = labelKeyProblem(key) ?? labelValueProblem(key, value);
    if (problem) ctx.addIssue({ code: "custom", message: problem, path: [key] });
  }
});

const OPERATORS = ["Equals", "NotEquals", "In", "Exists", "Absent", "Prefix", "Gt", "Lt"] as const;
const NUMERIC_OPERATORS: readonly unknown[] = ["Gt", "Lt"];
/** User claims are strings and lists of strings: no numeric comparison. */
const CLAIM_OPERATORS = ["Equals", "NotEquals", "In", "Exists", "Absent", "Prefix"] as const;

/** `value: 0` in YAML is a number: a comparison bound may be written unquoted. */
function quoteNumericBound(input: unknown): unknown {
  if (typeof input !== "object" || input === null) return input;
  const e = input as Record<string, unknown>;
  if (!NUMERIC_OPERATORS.includes(e.operator) || typeof e.value !== "number") return input;
  return { ...e, value: String(e.value) };
}

interface Operands {
  readonly operator: (typeof OPERATORS)[number];
  readonly value?: string | undefined;
  readonly values?: readonly string[] | undefined;
}

/** Which of `value` / `values` an operator takes, checked the same for label and user-claim tests. */
function checkOperands(expr: Operands, ctx: z.RefinementCtx): void {
  const { operator, value, values } = expr;
  const numeric = NUMERIC_OPERATORS.includes(operator);
  const needsValue = numeric || operator === "Equals" || operator === "NotEquals" || operator === "Prefix";
  const needsValues = operator === "In";
  if (needsValue && value === undefined)
    ctx.addIssue({ code: "custom", message: `operator ${operator} needs "value"` });
  if (!needsValue && value !== undefined)
    ctx.addIssue({
      code: "custom",
      message: `operator ${operator} takes no "value"`,
      path: ["value"],
    });
  if (needsValues && (values === undefined || values.length === 0))
    ctx.addIssue({
      code: "custom",
      message: `operator In needs a non-empty "values" list`,
      path: values === undefined ? [] : ["values"],
    });
  if (!needsValues && values !== undefined)
    ctx.addIssue({
      code: "custom",
      message: `operator ${operator} takes no "values"`,
      path: ["values"],
    });
  const problem = numeric && value !== undefined ? numericBoundProblem(operator, value) : null;
  if (problem) ctx.addIssue({ code: "custom", message: problem, path: ["value"] });
}

const matchExpressionFields = z
  .strictObject({
    key: labelKey,
    operator: z.enum(OPERATORS),
    value: z.string().optional(),
    values: z.array(z.string()).optional(),
  })
  .superRefine(checkOperands);

/** A test on a verified user's claims (`core/user.ts`); multi-valued claims hold when any value does. */
const userExpression = z
  .strictObject({
    key: z.enum(USER_CLAIM_KEYS),
    operator: z.enum(CLAIM_OPERATORS),
    value: z.string().optional(),
    values: z.array(z.string()).optional(),
  })
  .superRefine(checkOperands);

const matchExpression = z.preprocess(quoteNumericBound, matchExpressionFields);

export const selectorSchema = z.strictObject({
  matchLabels: labelMap.optional(),
  matchExpressions: z.array(matchExpression).optional(),
});

const PORT_RANGE = { error: "port must be an integer 1-65535" };
const port = z.number(PORT_RANGE).int(PORT_RANGE).min(1, PORT_RANGE).max(65535, PORT_RANGE);

const cidr = z.string().superRefine((value, ctx) => {
  const parsed = parseCidr(value);
  if (!parsed.ok) ctx.addIssue({ code: "custom", message: parsed.reason });
});

const dnsName = z.string().superRefine((value, ctx) => {
  const problem = dnsPatternProblem(value);
  if (problem) ctx.addIssue({ code: "custom", message: problem });
});

function peerSchema(direction: "ingress" | "egress") {
  return z
    .strictObject({
      matchLabels: labelMap.optional(),
      matchExpressions: z.array(matchExpression).optional(),
      cidrs: z.array(cidr).min(1).optional(),
      dnsNames: z.array(dnsName).min(1).optional(),
      user: z.array(userExpression).min(1).optional(),
    })
    .superRefine((value, ctx) => {
      const p = value;
      const labelled = p.matchLabels !== undefined || p.matchExpressions !== undefined;
      const addressed = p.cidrs !== undefined || p.dnsNames !== undefined;
      if (direction === "egress" && p.user !== undefined)
        ctx.addIssue({
          code: "custom",
          message: `user is only valid in ingress "from" entries (the sidecar verifies people arriving at a workload)`,
          path: ["user"],
        });
      if (direction === "ingress" && p.dnsNames !== undefined)
        ctx.addIssue({
          code: "custom",
          message: `dnsNames is only valid in egress "to" entries`,
          path: ["dnsNames"],
        });
      if (labelled && addressed)
        ctx.addIssue({
          code: "custom",
          message:
            "an entry cannot mix label matchers (mesh workloads) with cidrs/dnsNames (non-mesh peers): it would never match; use two entries",
        });
      if (!labelled && !addressed && p.user === undefined)
        ctx.addIssue({
          code: "custom",
          message: `empty peer entry; use matchLabels: {} for any mesh workload, or omit the list for any peer`,
        });
    });
}

const headerMatch = z
  .strictObject({
    name: z.string().regex(HEADER_NAME, { error: "not a valid HTTP header name" }),
    value: z.string().optional(),
    present: z.boolean().optional(),
  })
  .superRefine((match, ctx) => {
    const { value, present } = match;
    if (value === undefined && present === undefined)
      ctx.addIssue({ code: "custom", message: `header match needs "value" or "present"` });
    if (value !== undefined && present !== undefined)
      ctx.addIssue({
        code: "custom",
        message: `header match takes "value" or "present", not both`,
      });
  });

const pathPattern = z.string().superRefine((value, ctx) => {
  const problem = pathPatternProblem(value);
  if (problem) ctx.addIssue({ code: "custom", message: problem });
});

const hostPattern = z.string().superRefine((value, ctx) => {
  const problem = dnsPatternProblem(value);
  if (problem) ctx.addIssue({ code: "custom", message: problem });
});

const httpMatch = z.strictObject({
  methods: z
    .array(z.string().regex(HTTP_METHOD, { error: "not a valid HTTP method token" }))
    .min(1)
    .optional(),
  paths: z.array(pathPattern).min(1).optional(),
  hosts: z.array(hostPattern).min(1).optional(),
  headers: z.array(headerMatch).min(1).optional(),
});

const ACTIONS = ["allow", "deny", "log"] as const;

const ingressRule = z.strictObject({
  action: z.enum(ACTIONS),
  from: z.array(peerSchema("ingress")).min(1).optional(),
  ports: z.array(port).min(1).optional(),
  http: httpMatch.optional(),
});

const egressRule = z.strictObject({
  action: z.enum(ACTIONS),
  to: z.array(peerSchema("egress")).min(1).optional(),
  ports: z.array(port).min(1).optional(),
  http: httpMatch.optional(),
});

const metadata = z.strictObject({
  name: z.string().regex(NAME, {
    error:
      "name must be lower-case letters, digits, '-' or '.', starting and ending alphanumeric, at most 253",
  }),
});

export const authorizationPolicySchema = z.strictObject({
  apiVersion: z.literal(API_VERSION),
  kind: z.literal("AuthorizationPolicy"),
  metadata,
  spec: z.strictObject({
    selector: selectorSchema,
    ingress: z.array(ingressRule).optional(),
    egress: z.array(egressRule).optional(),
  }),
});

const MTLS_MODES = ["STRICT", "PERMISSIVE", "DISABLE"] as const;

export const peerAuthenticationSchema = z.strictObject({
  apiVersion: z.literal(API_VERSION),
  kind: z.literal("PeerAuthentication"),
  metadata,
  spec: z.strictObject({
    selector: selectorSchema,
    mode: z.enum(MTLS_MODES),
    portLevel: z
      .record(z.string(), z.enum(MTLS_MODES))
      .superRefine((value, ctx) => {
        for (const key of Object.keys(value)) {
          const n = Number(key);
          if (!/^[0-9]{1,5}$/.test(key) || n < 1 || n > 65535)
            ctx.addIssue({
              code: "custom",
              message: `port "${key}" is not an integer 1-65535`,
              path: [key],
            });
        }
      })
      // The refinement above is code; editors read the same rule from the JSON Schema.
      .meta({ propertyNames: { type: "string", pattern: "^[0-9]{1,5}$" } })
      .optional(),
  }),
});

export const KINDS = ["AuthorizationPolicy", "PeerAuthentication"] as const;

export type Selector = z.infer<typeof selectorSchema>;
export type AuthorizationPolicy = z.infer<typeof authorizationPolicySchema>;
export type PeerAuthentication = z.infer<typeof peerAuthenticationSchema>;
export type PolicyDocument = AuthorizationPolicy | PeerAuthentication;
export type IngressRule = z.infer<typeof ingressRule>;
export type EgressRule = z.infer<typeof egressRule>;
export type PeerMatch = z.infer<ReturnType<typeof peerSchema>>;
export type HttpMatch = z.infer<typeof httpMatch>;
export type HeaderMatch = z.infer<typeof headerMatch>;
export type MatchExpression = z.infer<typeof matchExpression>;
export type UserExpression = z.infer<typeof userExpression>;
export type MtlsMode = (typeof MTLS_MODES)[number];
export type RuleAction = (typeof ACTIONS)[number];
