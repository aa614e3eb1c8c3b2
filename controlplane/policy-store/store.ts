import { createHash } from "node:crypto";
import { readdir } from "node:fs/promises";
import type { Logger } from "pino";
import {
  checkPolicySet,
  compilePolicySet,
  emptyPolicySet,
  formatPolicyError,
  parsePolicyDocuments,
} from "../../core/policy/index.ts";
import type { CompiledPolicySet, ParsedDocument, PolicyError } from "../../core/policy/index.ts";
import { directorySource, type PolicyText, type PolicyTextSource } from "./sources.ts";

/**
 * The policy store: every `*.yaml` / `*.yml` file of one directory, validated, compiled into one set and
 * kept current while the directory changes. A file that stops validating keeps contributing its last
 * good version (and its errors are reported) so a typo never opens or closes the mesh by accident.
 */

export interface PolicySnapshot {
  /** Increments each time the active documents change. */
  readonly revision: number;
  readonly set: CompiledPolicySet;
  /** The active documents, with the file and line each came from. */
  readonly documents: readonly ParsedDocument[];
  /** Outstanding problems. Non-empty means some file's latest content is not in effect. */
  readonly errors: readonly PolicyError[];
}

export type PolicyStoreListener = (snapshot: PolicySnapshot) => void;

export interface PolicyStoreOptions {
  readonly directory: string;
  /** Where the texts come from instead of `directory` (etcd, shared by replicas); `directory` then names it. */
  readonly source?: PolicyTextSource;
  /** Watch the directory and reload on change (default true). */
  readonly watch?: boolean;
  /** Coalesces bursts of file events (editors write several times per save). Default 50 ms. */
  readonly debounceMs?: number;
  readonly logger?: Logger;
}

interface FileState {
  readonly hash: string;
  /** The last version of this file that validated; null if it never did. */
  readonly good: readonly ParsedDocument[] | null;
  readonly errors: readonly PolicyError[];
}

function fingerprint(docs: readonly ParsedDocument[]): string {
  return JSON.stringify(docs.map((d) => d.document));
}

export class PolicyStore {
  private files = new Map<string, FileState>();
  private snapshot: PolicySnapshot = { revision: 0, set: emptyPolicySet(), documents: [], errors: [] };
  private readonly listeners = new Set<PolicyStoreListener>();
  private readonly source: PolicyTextSource;
  private stopWatching: (() => void) | null = null;
  private debounce: NodeJS.Timeout | null = null;
  private scanning: Promise<PolicySnapshot> | null = null;
  private rescanRequested = false;
  private closed = false;

  private constructor(private readonly options: PolicyStoreOptions) {
    this.source = options.source ?? directorySource(options.directory);
  }

  /** Loads the directory (it must exist) and, unless `watch: false`, starts watching it. */
  static async open(options: PolicyStoreOptions): Promise<PolicyStore> {
    const store = new PolicyStore(options);
    if (!options.source) await readdir(options.directory);
    await store.reload();
    if (options.watch !== false) store.startWatching();
    return store;
  }

  current(): PolicySnapshot {
    return this.snapshot;
  }

  /** Every policy file's text as it is now (which may be ahead of the compiled snapshot). */
  texts(): Promise<PolicyText[]> {
    return this.source.list();
  }

  /** Calls `listener` after every reload that changes the active documents or the reported errors. */
  onChange(listener: PolicyStoreListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Rescans now. Concurrent calls share one scan; a call during a scan schedules one more. */
  reload(): Promise<PolicySnapshot> {
    if (this.closed) return Promise.reject(new Error("policy store is closed"));
    if (this.scanning) {
      this.rescanRequested = true;
      return this.scanning;
    }
    this.scanning = this.scanLoop().finally(() => {
      this.scanning = null;
    });
    return this.scanning;
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.debounce) clearTimeout(this.debounce);
    this.stopWatching?.();
    this.stopWatching = null;
    this.listeners.clear();
    await this.scanning?.catch(() => undefined);
  }

  private startWatching(): void {
    this.stopWatching = this.source.watch(() => this.scheduleScan(), this.options.logger);
  }

  private scheduleScan(): void {
    if (this.closed) return;
    if (this.debounce) clearTimeout(this.debounce);
    this.debounce = setTimeout(() => {
      this.debounce = null;
      this.reload().catch((err: unknown) =>
        this.options.logger?.error({ err }, "policy directory reload failed"),
      );
    }, this.options.debounceMs ?? 50);
  }

  private async scanLoop(): Promise<PolicySnapshot> {
    let result = await this.scan();
    while (this.rescanRequested && !this.closed) {
      this.rescanRequested = false;
      result = await this.scan();
    }
    return result;
  }

  private async scan(): Promise<PolicySnapshot> {
    let texts;
    try {
      texts = await this.source.list();
    } catch (err) {
      const error = {
        file: this.options.directory,
        path: "",
        message: `cannot read policy directory: ${(err as Error).message}`,
      };
      return this.publish(this.snapshot.documents, this.snapshot.set, [error]);
    }
    const next = new Map<string, FileState>();
    for (const { file, text } of texts) {
      const previous = this.files.get(file);
      if (text instanceof Error) {
        // Unreadable: keep the last good version.
        const error = { file, path: "", message: `cannot read: ${text.message}` };
        next.set(file, { hash: "", good: previous?.good ?? null, errors: [error] });
        continue;
      }
      if (text.length === 0 && previous?.good) {
        // Writers that truncate before writing expose an empty file for a moment; never treat that as
        // "remove these policies" (removing an egress policy opens egress).
        const error = { file, path: "", message: "file is empty; delete it to remove its policies" };
        next.set(file, { hash: "", good: previous.good, errors: [error] });
        continue;
      }
      const hash = createHash("sha256").update(text).digest("hex");
      if (previous && previous.hash === hash) {
        next.set(file, previous);
        continue;
      }
      const parsed = parsePolicyDocuments(text, file);
      next.set(
        file,
        parsed.ok
          ? { hash, good: parsed.documents, errors: [] }
          : { hash, good: previous?.good ?? null, errors: parsed.errors },
      );
    }
    this.files = next;
    const fileErrors = [...next.values()].flatMap((f) => f.errors);
    const candidate = [...next.values()].flatMap((f) => f.good ?? []);
    const setErrors = checkPolicySet(candidate);
    if (setErrors.length > 0)
      return this.publish(this.snapshot.documents, this.snapshot.set, [...fileErrors, ...setErrors]);
    if (fingerprint(candidate) === fingerprint(this.snapshot.documents))
      return this.publish(this.snapshot.documents, this.snapshot.set, fileErrors);
    return this.publish(candidate, compilePolicySet(candidate.map((d) => d.document)), fileErrors);
  }

  private publish(
    documents: readonly ParsedDocument[],
    set: CompiledPolicySet,
    errors: readonly PolicyError[],
  ): PolicySnapshot {
    const prev = this.snapshot;
    const changedSet = set !== prev.set;
    const changedErrors = JSON.stringify(errors) !== JSON.stringify(prev.errors);
    if (!changedSet && !changedErrors) return prev;
    this.snapshot = { revision: prev.revision + (changedSet ? 1 : 0), set, documents, errors };
    const log = this.options.logger;
    for (const e of errors) log?.warn({ file: e.file, line: e.line, field: e.path }, formatPolicyError(e));
    if (changedSet)
      log?.info({ revision: this.snapshot.revision, documents: documents.length }, "policy set updated");
    for (const listener of this.listeners) listener(this.snapshot);
    return this.snapshot;
  }
}
