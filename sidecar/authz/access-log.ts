import type { Logger } from "pino";
import { z } from "zod";

/**
 * Which decisions a sidecar writes as access-log lines, per port (ingress: the application's port;
 * egress: the destination's). `denied` (every port's default) logs denials and observe mode's
 * would-be denials; `all` logs allowed decisions too; `off` logs none. `sample` keeps that share of
 * the lines a port would write (0.1 = one in ten, drawn at random), so a busy port can log `all`
 * without logging everything. Metrics and flow records count every decision whatever this says.
 */

export const ACCESS_LOG_MODES = ["all", "denied", "off"] as const;
export type AccessLogMode = (typeof ACCESS_LOG_MODES)[number];

export const accessLogRuleSchema = z.strictObject({
  port: z.number().int().min(1).max(65535),
  log: z.enum(ACCESS_LOG_MODES),
  sample: z.number().min(0).max(1).default(1),
});

export const accessLogSchema = z
  .array(accessLogRuleSchema)
  .default([])
  .superRefine((rules, ctx) => {
    const seen = new Set<number>();
    for (const [i, r] of rules.entries()) {
      if (seen.has(r.port))
        ctx.addIssue({
          code: "custom",
          message: `port ${r.port} has two access-log rules`,
          path: [i, "port"],
        });
      seen.add(r.port);
    }
  });

export type AccessLogRule = z.output<typeof accessLogRuleSchema>;

export class AccessLogSpecError extends Error {
  constructor(item: string, problem: string) {
    super(`--access-log: "${item}": ${problem} (expected <port>=all|denied|off[:<share 0..1>])`);
    this.name = "AccessLogSpecError";
  }
}

/** Parses `8080=all:0.1,9090=off` (the `--access-log` flag) into rules. */
export function parseAccessLogSpec(spec: string): AccessLogRule[] {
  const rules: AccessLogRule[] = [];
  for (const item of spec.split(",").map((s) => s.trim())) {
    if (item === "") continue;
    const m = /^(\d{1,5})=(all|denied|off)(?::([0-9.]+))?$/.exec(item);
    if (!m) throw new AccessLogSpecError(item, "not a port rule");
    const port = Number(m[1]);
    const sample = m[3] === undefined ? 1 : Number(m[3]);
    if (port < 1 || port > 65535) throw new AccessLogSpecError(item, "port out of range");
    if (!Number.isFinite(sample) || sample < 0 || sample > 1)
      throw new AccessLogSpecError(item, "the share is not a number from 0 to 1");
    rules.push({ port, log: m[2] as AccessLogMode, sample });
  }
  return rules;
}

export interface AccessLogEntry {
  readonly port: number;
  readonly verdict: "allow" | "deny";
  readonly wouldDeny: boolean;
  /** The line's fields, built only for a line that is written (most decisions write none). */
  readonly fields: () => Readonly<Record<string, unknown>>;
}

export class AccessLog {
  private readonly byPort: ReadonlyMap<number, AccessLogRule>;

  /** `random`: draws in [0, 1) for sampling (an input, so a test decides what is kept). */
  constructor(
    rules: readonly AccessLogRule[],
    private readonly log: Logger,
    private readonly random: () => number = Math.random,
  ) {
    this.byPort = new Map(rules.map((r) => [r.port, r]));
  }

  /** Writes the entry's line if its port's rule asks for it and the sample keeps it. */
  write(e: AccessLogEntry): void {
    const rule = this.byPort.get(e.port);
    const mode = rule?.log ?? "denied";
    const denied = e.verdict === "deny" || e.wouldDeny;
    if (mode === "off" || (mode === "denied" && !denied)) return;
    const sample = rule?.sample ?? 1;
    if (sample < 1 && this.random() >= sample) return;
    const msg = e.verdict === "deny" ? "denied" : e.wouldDeny ? "would deny (observe mode)" : "allowed";
    this.log.info({ access: true, ...e.fields() }, msg);
  }
}
