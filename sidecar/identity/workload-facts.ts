import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { readFile, readlink } from "node:fs/promises";
import { parse as parseYaml } from "yaml";
import { z } from "zod";
import type { WireMetadataFacts, WireProcessFacts } from "../../core/svid/wire.ts";

/** The workload's process or metadata file could not be read or is malformed. */
export class WorkloadFactsError extends Error {}

async function sha256File(path: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest("hex");
}

function idLine(status: string, field: "Uid" | "Gid", pid: number): number {
  const m = new RegExp(`^${field}:\\s+(\\d+)`, "m").exec(status);
  if (!m) throw new WorkloadFactsError(`/proc/${pid}/status has no ${field} line`);
  return Number(m[1]);
}

/** The user name for `uid` from /etc/passwd, or the number itself when it has none. */
async function userName(uid: number, passwdPath: string): Promise<string> {
  const passwd = await readFile(passwdPath, "utf8").catch(() => "");
  for (const line of passwd.split("\n")) {
    const [name, , id] = line.split(":");
    if (name && id !== undefined && Number(id) === uid) return name;
  }
  return String(uid);
}

/**
 * Reads the protected workload's process attributes from /proc/<pid>: real uid and gid, user name,
 * executable path, and the SHA-256 of the executable's contents (read through /proc/<pid>/exe, so
 * it is the binary actually running even if the path was replaced since).
 */
export async function collectProcessFacts(
  pid: number,
  options: { passwdPath?: string } = {},
): Promise<WireProcessFacts> {
  if (!Number.isInteger(pid) || pid <= 0) throw new WorkloadFactsError(`pid ${pid} is not a process id`);
  try {
    const status = await readFile(`/proc/${pid}/status`, "utf8");
    const uid = idLine(status, "Uid", pid);
    const gid = idLine(status, "Gid", pid);
    const exePath = (await readlink(`/proc/${pid}/exe`)).replace(/ \(deleted\)$/, "");
    const exeSha256 = await sha256File(`/proc/${pid}/exe`);
    return { uid, gid, user: await userName(uid, options.passwdPath ?? "/etc/passwd"), exePath, exeSha256 };
  } catch (err) {
    if (err instanceof WorkloadFactsError) throw err;
    throw new WorkloadFactsError(`cannot read process ${pid}: ${(err as Error).message}`, { cause: err });
  }
}

const COUNT = z.number().int().min(0);
const metadataFileSchema = z
  .object({
    cloud: z
      .object({ region: z.string().min(1).optional(), zone: z.string().min(1).optional() })
      .strict()
      .optional(),
    image: z.string().min(1).optional(),
    vulnerabilities: z
      .object({
        critical: COUNT.default(0),
        high: COUNT.default(0),
        medium: COUNT.default(0),
        low: COUNT.default(0),
      })
      .strict()
      .optional(),
  })
  .strict();

/**
 * Reads the node's local metadata file (YAML or JSON):
 * `{ cloud: { region, zone }, image, vulnerabilities: { critical, high, medium, low } }`.
 */
export async function readMetadataFile(path: string): Promise<WireMetadataFacts> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    throw new WorkloadFactsError(`cannot read metadata file ${path}: ${(err as Error).message}`);
  }
  let value: unknown;
  try {
    value = parseYaml(text);
  } catch (err) {
    throw new WorkloadFactsError(`metadata file ${path} is not YAML/JSON: ${(err as Error).message}`);
  }
  const parsed = metadataFileSchema.safeParse(value ?? {});
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new WorkloadFactsError(
      `metadata file ${path}: ${issue?.path.join(".") || "document"}: ${issue?.message}`,
    );
  }
  const m = parsed.data;
  return {
    cloudRegion: m.cloud?.region ?? "",
    cloudZone: m.cloud?.zone ?? "",
    image: m.image ?? "",
    vulnerabilities: m.vulnerabilities ?? null,
  };
}
