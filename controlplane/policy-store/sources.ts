import { watch } from "node:fs";
import { readFile, readdir } from "node:fs/promises";
import { join } from "node:path";
import type { Logger } from "pino";

/** One policy text: `file` names it in errors; `text` is an Error when it could not be read. */
export interface PolicyText {
  readonly file: string;
  readonly text: string | Error;
}

/** Where the policy store reads policy YAML from. */
export interface PolicyTextSource {
  /** Every policy text, in a stable order; throws when the source itself cannot be listed. */
  list(): Promise<PolicyText[]>;
  /** Calls `changed` whenever a text may have changed; returns how to stop. */
  watch(changed: () => void, log?: Logger): () => void;
}

const POLICY_FILE = /^[^.].*\.ya?ml$/;

/** Every `*.yaml` / `*.yml` file (dotfiles ignored) of one directory, watched for changes. */
export function directorySource(dir: string): PolicyTextSource {
  return {
    async list() {
      const names = (await readdir(dir, { withFileTypes: true }))
        .filter((e) => e.isFile() && POLICY_FILE.test(e.name))
        .map((e) => e.name)
        .sort();
      const texts: PolicyText[] = [];
      for (const name of names) {
        const file = join(dir, name);
        try {
          texts.push({ file, text: await readFile(file, "utf8") });
        } catch (err) {
          // Deleted between listing and reading: the next event rescans.
          if ((err as NodeJS.ErrnoException).code !== "ENOENT") texts.push({ file, text: err as Error });
        }
      }
      return texts;
    },
    watch(changed, log) {
      const watcher = watch(dir, { persistent: false }, changed);
      watcher.on("error", (err) => {
        log?.error({ err, directory: dir }, "policy directory watch failed");
        changed();
      });
      return () => watcher.close();
    },
  };
}
