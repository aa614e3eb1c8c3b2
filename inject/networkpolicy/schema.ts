import { z } from "zod";

/**
 * The `networking.k8s.io/v1` NetworkPolicy as the API server validates it, checked at run time. The
 * spec is strict: a field this import does not know (a later API version's) is refused rather than
 * left out, since leaving out part of an allow-list could change what it means. What passes is
 * handed on as `kubernetes-types`' `NetworkPolicy` (`read.ts`), so the two shapes must agree.
 */

/** IANA service name, what a named container port is. */
const PORT_NAME = /^(?=.*[a-z])[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$/;

const labelSelectorRequirement = z
  .strictObject({
    key: z.string().min(1),
    operator: z.enum(["In", "NotIn", "Exists", "DoesNotExist"]),
    values: z.array(z.string()).optional(),
  })
  .superRefine((r, ctx) => {
    const listed = r.values !== undefined && r.values.length > 0;
    if ((r.operator === "In" || r.operator === "NotIn") && !listed)
      ctx.addIssue({ code: "custom", message: `operator ${r.operator} needs a non-empty values list` });
    if ((r.operator === "Exists" || r.operator === "DoesNotExist") && listed)
      ctx.addIssue({ code: "custom", message: `operator ${r.operator} takes no values`, path: ["values"] });
  });

export const labelSelectorSchema = z.strictObject({
  matchLabels: z.record(z.string(), z.string()).optional(),
  matchExpressions: z.array(labelSelectorRequirement).optional(),
});

const ipBlock = z.strictObject({ cidr: z.string().min(1), except: z.array(z.string().min(1)).optional() });

const peer = z
  .strictObject({
    podSelector: labelSelectorSchema.optional(),
    namespaceSelector: labelSelectorSchema.optional(),
    ipBlock: ipBlock.optional(),
  })
  .superRefine((p, ctx) => {
    const selectors = p.podSelector !== undefined || p.namespaceSelector !== undefined;
    if (p.ipBlock !== undefined && selectors)
      ctx.addIssue({
        code: "custom",
        message: "ipBlock cannot be combined with podSelector or namespaceSelector",
      });
    if (p.ipBlock === undefined && !selectors)
      ctx.addIssue({ code: "custom", message: "a peer needs podSelector, namespaceSelector or ipBlock" });
  });

const port = z
  .strictObject({
    protocol: z.enum(["TCP", "UDP", "SCTP"]).optional(),
    port: z
      .union([
        z.number().int().min(1, "a port is 1-65535").max(65535, "a port is 1-65535"),
        z
          .string()
          .regex(PORT_NAME, "a named port is an IANA service name (1-15 lower-case letters, digits, '-')"),
      ])
      .optional(),
    endPort: z.number().int().min(1).max(65535).optional(),
  })
  .superRefine((p, ctx) => {
    if (p.endPort === undefined) return;
    if (typeof p.port !== "number")
      ctx.addIssue({ code: "custom", message: "endPort needs a numeric port", path: ["endPort"] });
    else if (p.endPort < p.port)
      ctx.addIssue({
        code: "custom",
        message: `endPort ${p.endPort} is below port ${p.port}`,
        path: ["endPort"],
      });
  });

const ingressRule = z.strictObject({ from: z.array(peer).optional(), ports: z.array(port).optional() });
const egressRule = z.strictObject({ to: z.array(peer).optional(), ports: z.array(port).optional() });

const NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const NAMESPACE = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

export const networkPolicySchema = z.looseObject({
  apiVersion: z.literal("networking.k8s.io/v1"),
  kind: z.literal("NetworkPolicy"),
  metadata: z.looseObject({
    name: z.string().max(253).regex(NAME, "not a Kubernetes object name"),
    namespace: z.string().regex(NAMESPACE, "not a namespace name").optional(),
  }),
  spec: z.strictObject({
    podSelector: labelSelectorSchema,
    policyTypes: z.array(z.enum(["Ingress", "Egress"])).optional(),
    ingress: z.array(ingressRule).optional(),
    egress: z.array(egressRule).optional(),
  }),
});

export const namespaceSchema = z.looseObject({
  apiVersion: z.literal("v1"),
  kind: z.literal("Namespace"),
  metadata: z.looseObject({
    name: z.string().regex(NAMESPACE, "not a namespace name"),
    labels: z.record(z.string(), z.string()).optional(),
  }),
});
