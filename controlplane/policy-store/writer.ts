import { randomBytes } from "node:crypto";
import { rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { formatPolicyError, parsePolicyDocuments } from "../../core/policy/index.ts";
import { HttpError } from "../http/router.ts";

/** Changes the policy texts a policy store compiles (`sigil policy apply` / `remove`). */
export interface PolicyWriter {
  apply(name: string, yaml: string): Promise<void>;
  /** True when there was such a file. */
  remove(name: string): Promise<boolean>;
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,120}\.ya?ml$/;

/**
 * Refuses a bad file name, and (when given) a text that does not validate, with every error naming
 * its line and field: a policy that would not compile is never stored.
 */
export function checkPolicyText(name: string, yaml: string | undefined, file: string): void {
  if (!NAME.test(name))
    throw new HttpError(
      400,
      `policy file name "${name}" must be letters, digits, '.', '_' or '-' ending in .yaml or .yml`,
    );
  if (yaml === undefined) return;
  const parsed = parsePolicyDocuments(yaml, file);
  if (!parsed.ok) throw new HttpError(400, parsed.errors.map((e) => formatPolicyError(e)).join("\n"));
}

/** The single-process default: files in the watched policy directory, written atomically. */
export function directoryWriter(dir: string): PolicyWriter {
  return {
    async apply(name, yaml) {
      checkPolicyText(name, yaml, join(dir, name));
      const tmp = join(dir, `.${randomBytes(6).toString("hex")}.tmp`);
      await writeFile(tmp, yaml, { mode: 0o644 });
      await rename(tmp, join(dir, name));
    },
    async remove(name) {
      checkPolicyText(name, undefined, join(dir, name));
      try {
        await rm(join(dir, name));
        return true;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === "ENOENT") return false;
        throw err;
      }
    },
  };
}
