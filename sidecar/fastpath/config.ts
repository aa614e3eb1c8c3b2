/**
 * Configuration of a stand-alone fast-path enforcer process (main.ts): where its SVID, trust
 * bundle, revocations and policy live, which ports take the fast path, and the queue layout.
 * Validated with zod; errors name the field.
 */
import { readFile } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { z } from "zod";

const port = z.number().int().min(1).max(65535);

export const fastPathConfigSchema = z
  .object({
    /** PEM chain (leaf first) and PKCS#8 PEM key of this workload's SVID. */
    svidFile: z.string().min(1),
    keyFile: z.string().min(1),
    trustDomain: z.string().min(1),
    /** SPIFFE bundle document (JSON). */
    bundleFile: z.string().min(1),
    /** Revocation list JSON: { sequence, entries: [{ spiffeId, revokedAtMs, expiresAtMs, reason }] }. */
    revocationsFile: z.string().min(1).optional(),
    /** Policy YAML (AuthorizationPolicy documents). */
    policyFile: z.string().min(1),
    mode: z.enum(["enforce", "observe"]).default("enforce"),
    inboundPorts: z.array(port).default([]),
    outboundPorts: z.array(port).default([]),
    queueFirst: z.number().int().min(0).max(65535).default(4200),
    queueCount: z.number().int().min(1).max(64).default(2),
    failOpen: z.boolean().default(false),
    installRules: z.boolean().default(true),
    windowMs: z.number().int().min(100).max(300_000).default(10_000),
    /** Handshake packets each queue holds for a verdict; past it the kernel drops them (never accepts). */
    queueLength: z.number().int().min(1).max(65536).default(4096),
    /** 1500-byte MTU minus IPv6 (40) and a full TCP header (60): what a token-carrying SYN can hold. */
    maxTokenBytes: z.number().int().min(256).max(1400).default(1400),
    exid: z.number().int().min(0).max(0xffff).default(0x5347),
  })
  .strict();

export type FastPathConfig = z.infer<typeof fastPathConfigSchema>;

export class FastPathConfigError extends Error {
  override readonly name = "FastPathConfigError";
}

/** Reads and validates a config file; relative paths inside it are relative to the file. */
export async function loadFastPathConfig(file: string): Promise<FastPathConfig> {
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(file, "utf8"));
  } catch (err) {
    throw new FastPathConfigError(`${file}: ${(err as Error).message}`);
  }
  const parsed = fastPathConfigSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new FastPathConfigError(`${file}: ${issue?.path.join(".") || "(root)"}: ${issue?.message}`);
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
