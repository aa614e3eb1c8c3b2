import { z } from "zod";
import { API_VERSION, authorizationPolicySchema, peerAuthenticationSchema } from "./schema.ts";

/**
 * JSON Schemas of the policy kinds, generated from the zod schemas the policy store validates with,
 * so an editor checks a file against the same rules (draft-07: what YAML language servers and
 * most validators read). Refinements written as code (CIDR syntax, path patterns, cross-field
 * rules) are not expressible here and stay the store's to report.
 */

type JsonSchema = Record<string, unknown>;

const KIND_SCHEMAS = {
  AuthorizationPolicy: authorizationPolicySchema,
  PeerAuthentication: peerAuthenticationSchema,
} as const;

export const SCHEMA_FILES = {
  AuthorizationPolicy: "authorization-policy.schema.json",
  PeerAuthentication: "peer-authentication.schema.json",
  any: "policy.schema.json",
} as const;

function kindSchema(kind: keyof typeof KIND_SCHEMAS): JsonSchema {
  const generated = z.toJSONSchema(KIND_SCHEMAS[kind], {
    target: "draft-7",
    io: "input",
    unrepresentable: "throw",
  }) as JsonSchema;
  const { $schema, ...body } = generated;
  return { $schema, title: `Sigil ${kind} (${API_VERSION})`, ...body };
}

/** Each published file's name and content: one schema per kind, and one for a document of any kind. */
export function policyJsonSchemas(): Record<string, JsonSchema> {
  const ap = kindSchema("AuthorizationPolicy");
  const pa = kindSchema("PeerAuthentication");
  const strip = ({ $schema: _, ...rest }: JsonSchema): JsonSchema => rest;
  return {
    [SCHEMA_FILES.AuthorizationPolicy]: ap,
    [SCHEMA_FILES.PeerAuthentication]: pa,
    [SCHEMA_FILES.any]: {
      $schema: ap.$schema,
      title: `A Sigil policy document (${API_VERSION})`,
      description: "One YAML document of a policy file: an AuthorizationPolicy or a PeerAuthentication.",
      definitions: { AuthorizationPolicy: strip(ap), PeerAuthentication: strip(pa) },
      oneOf: [{ $ref: "#/definitions/AuthorizationPolicy" }, { $ref: "#/definitions/PeerAuthentication" }],
    },
  };
}
