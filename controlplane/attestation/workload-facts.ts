import { z } from "zod";
import type { AttestedLabel } from "../../core/labels.ts";
import { labelValueProblem } from "../../core/labels.ts";
import { AttestationError } from "./errors.ts";

const ID = z.number().int().min(0).max(0xffffffff);
export const processFactsSchema = z.object({
  uid: ID,
  gid: ID,
  user: z.string().regex(/^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}\$?$/, "not a user name"),
  exePath: z.string().startsWith("/", "must be an absolute path").max(256),
  exeSha256: z.string().regex(/^[0-9a-f]{64}$/, "must be 64 lower-case hex digits"),
});

const COUNT = z.number().int().min(0).max(1_000_000);
export const metadataFactsSchema = z.object({
  cloudRegion: z.string().min(1).max(64).optional(),
  cloudZone: z.string().min(1).max(64).optional(),
  image: z.string().min(1).max(256).optional(),
  vulnerabilities: z.object({ critical: COUNT, high: COUNT, medium: COUNT, low: COUNT }).optional(),
});

function check<T>(schema: z.ZodType<T>, value: unknown, what: string): T {
  const parsed = schema.safeParse(value);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new AttestationError("invalid-facts", `${what} ${issue?.path.join(".")}: ${issue?.message}`);
  }
  return parsed.data;
}

/**
 * Turns the sidecar's observations into labels with their provenance. They are facts reported by
 * the node's sidecar, recorded as such ("proc", "metadata-file"), distinct from what a join token
 * or the cluster vouches for.
 */
export function factLabels(process: unknown, metadata: unknown): AttestedLabel[] {
  const out: AttestedLabel[] = [];
  if (process !== undefined) {
    const p = check(processFactsSchema, process, "process facts");
    out.push(
      { key: "proc.uid", value: String(p.uid), provenance: "proc" },
      { key: "proc.gid", value: String(p.gid), provenance: "proc" },
      { key: "proc.user", value: p.user, provenance: "proc" },
      { key: "proc.exe", value: p.exePath, provenance: "proc" },
      { key: "proc.sha256", value: p.exeSha256, provenance: "proc" },
    );
  }
  if (metadata !== undefined) {
    const m = check(metadataFactsSchema, metadata, "metadata facts");
    const add = (key: string, value: string | undefined) => {
      if (value !== undefined) out.push({ key, value, provenance: "metadata-file" });
    };
    add("cloud.region", m.cloudRegion);
    add("cloud.zone", m.cloudZone);
    add("image", m.image);
    if (m.vulnerabilities) {
      for (const severity of ["critical", "high", "medium", "low"] as const) {
        add(`vuln.${severity}`, String(m.vulnerabilities[severity]));
      }
    }
  }
  for (const label of out) {
    const problem = labelValueProblem(label.key, label.value);
    if (problem) throw new AttestationError("invalid-facts", problem);
  }
  return out;
}
