import { readFile } from "node:fs/promises";
import { parse as parseYaml } from "yaml";
import { z } from "zod";
import { settingsFromFlags } from "../options.ts";
import type { InjectSettings } from "../settings.ts";

/**
 * The control plane's `--webhook <file>`: where the injection webhook listens, the names its
 * certificate carries, and the injection settings (the same as `sigil inject`'s flags, camelCase).
 * The trust domain is the control plane's own.
 */
export const webhookConfigSchema = z
  .object({
    host: z.string().min(1).default("0.0.0.0"),
    port: z.number().int().min(1).max(65535).default(15443),
    dnsNames: z.array(z.string().regex(/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/, "not a DNS name")).min(1),
    inject: z
      .object({
        image: z.string().min(1).optional(),
        imagePullPolicy: z.string().optional(),
        controlPlane: z.string().optional(),
        runtime: z.enum(["kubernetes"]).optional(),
        bundleConfigMap: z.string().min(1).optional(),
        tokenAudience: z.string().min(1).optional(),
        sidecarLogLevel: z.string().optional(),
      })
      .strict()
      .default({}),
  })
  .strict();

export interface WebhookConfig {
  readonly host: string;
  readonly port: number;
  readonly dnsNames: readonly string[];
  readonly settings: InjectSettings;
}

export class WebhookConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "WebhookConfigError";
  }
}

/** Validates a parsed config document; `source` names it in errors. */
export function parseWebhookConfig(value: unknown, trustDomain: string, source: string): WebhookConfig {
  const r = webhookConfigSchema.safeParse(value);
  if (!r.success) {
    const issue = r.error.issues[0];
    throw new WebhookConfigError(`${source}: ${issue?.path.join(".") || "(root)"}: ${issue?.message}`);
  }
  let settings: InjectSettings;
  try {
    settings = settingsFromFlags({ ...r.data.inject, trustDomain });
  } catch (err) {
    throw new WebhookConfigError(`${source}: inject: ${(err as Error).message}`);
  }
  return { host: r.data.host, port: r.data.port, dnsNames: r.data.dnsNames, settings };
}

export async function readWebhookConfig(path: string, trustDomain: string): Promise<WebhookConfig> {
  let value: unknown;
  try {
    value = parseYaml(await readFile(path, "utf8"));
  } catch (err) {
    throw new WebhookConfigError(`${path}: ${(err as Error).message}`);
  }
  return parseWebhookConfig(value, trustDomain, path);
}
