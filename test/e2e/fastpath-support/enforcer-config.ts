/**
 * The configuration file of the stand-alone enforcer harness (enforcer-main.ts): where its SVID,
 * trust bundle, revocations and policy live, which ports take the fast path, and the queue layout
 * (the pool's own schema, so the same limits apply). Errors name the file and the field.
 */
import { readFile } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { z } from "zod";
import { checkPolicySet, formatPolicyError, parsePolicyDocuments } from "../../../core/policy/index.ts";
import type { PolicyDocument } from "../../../core/policy/index.ts";
import { enforcerPoolSchema } from "../../../sidecar/fastpath/config.ts";

const port = z.number().int().min(1).max(65535);

const harnessConfigSchema = enforcerPoolSchema
  .extend({
    /** PEM chain (leaf first) and PKCS#8 PEM key of this workload's SVID. */
    svidFile: z.string().min(1),
    keyFile: z.string().min(1),
    trustDomain: z.string().min(1),
    /** SPIFFE bundle document (JSON). */
    bundleFile: z.string().min(1),
    /** Revocation list JSON: { sequence, entries: [{ spiffeId, revokedAtMs, expiresAtMs, reason }] }. */
    revocationsFile: z.string().min(1).optional(),
    /** Policy YAML (AuthorizationPolicy documents), as a user writes it. */
    policyFile: z.string().min(1),
    mode: z.enum(["enforce", "observe"]).default("enforce"),
    inboundPorts: z.array(port).default([]),
    outboundPorts: z.array(port).default([]),
    failOpen: z.boolean().default(false),
    installRules: z.boolean().default(true),
  })
  .strict();

export type HarnessConfig = z.infer<typeof harnessConfigSchema>;

/** Reads and validates a config file; relative paths inside it are relative to the file. */
export async function loadHarnessConfig(file: string): Promise<HarnessConfig> {
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(file, "utf8"));
  } catch (err) {
    throw new Error(`${file}: ${(err as Error).message}`);
  }
  const parsed = harnessConfigSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new Error(`${file}: ${issue?.path.join(".") || "(root)"}: ${issue?.message}`);
  }
  const base = dirname(resolve(file));
  const at = (p: string): string => resolve(base, p);
  const c = parsed.data;
  return {
    ...c,
    svidFile: at(c.svidFile),
    keyFile: at(c.keyFile),
    bundleFile: at(c.bundleFile),
    policyFile: at(c.policyFile),
    ...(c.revocationsFile === undefined ? {} : { revocationsFile: at(c.revocationsFile) }),
  };
}

/** Policy YAML as the control plane reads it (every document valid, names unique), as documents. */
export function policyDocumentsOf(text: string, file: string): PolicyDocument[] {
  const parsed = parsePolicyDocuments(text, file);
  if (!parsed.ok) throw new Error(parsed.errors.map(formatPolicyError).join("\n"));
  const problems = checkPolicySet(parsed.documents);
  if (problems.length > 0) throw new Error(problems.map(formatPolicyError).join("\n"));
  return parsed.documents.map((d) => d.document);
}
