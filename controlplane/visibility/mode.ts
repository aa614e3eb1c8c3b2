import { EventEmitter } from "node:events";
import { mkdir, open, readFile, rename } from "node:fs/promises";
import { dirname } from "node:path";
import { z } from "zod";
import { parseSpiffeId } from "../../core/identity.ts";
import type { Labels } from "../../core/labels.ts";
import type { EnforcementMode } from "../../core/policy/index.ts";

/**
 * Enforcement mode per workload: mesh-wide default, per namespace, per workload (SPIFFE ID), the
 * most specific setting winning. Switchable at run time: every change is persisted (when the store
 * has a file) before it is visible, then announced with a `change` event so the policy distribution
 * can push the new modes to the sidecars.
 */

export interface ModeSettings {
  readonly mesh: EnforcementMode;
  /** By namespace (the `k8s.ns` label, else `namespace`). */
  readonly namespaces: Readonly<Record<string, EnforcementMode>>;
  /** By SPIFFE ID. */
  readonly workloads: Readonly<Record<string, EnforcementMode>>;
}

export type ModeScope =
  | { readonly kind: "mesh" }
  | { readonly kind: "namespace"; readonly name: string }
  | { readonly kind: "workload"; readonly spiffeId: string };

export interface EffectiveMode {
  readonly mode: EnforcementMode;
  /** Which setting decided: the workload's own, its namespace's, or the mesh default. */
  readonly from: "workload" | "namespace" | "mesh";
}

export const NAMESPACE_LABELS = ["k8s.ns", "namespace"] as const;

const modeSchema = z.enum(["enforce", "observe"]);
const settingsSchema = z.strictObject({
  mesh: modeSchema,
  namespaces: z.record(z.string().min(1).max(253), modeSchema),
  workloads: z.record(
    z.string().refine((id) => parseSpiffeId(id) !== null, "not a SPIFFE ID"),
    modeSchema,
  ),
});

export class ModeStoreError extends Error {}

/** Mode settings kept outside this process (etcd), shared by every replica. */
export interface SharedModeSettings {
  /** Applies `change` to the stored settings atomically (compare-and-swap) and returns the result. */
  update(change: (current: ModeSettings) => ModeSettings): Promise<ModeSettings>;
  /** Calls `listener` with settings changed through another replica. */
  watch(listener: (settings: ModeSettings) => void): void;
}

/** Validates stored settings, naming `where` and the field at fault. */
export function parseModeSettings(text: string, where: string): ModeSettings {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new ModeStoreError(`${where}: not valid JSON: ${(err as Error).message}`);
  }
  const parsed = settingsSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new ModeStoreError(`${where}: ${issue?.path.join(".") || "settings"}: ${issue?.message}`);
  }
  return parsed.data;
}

export function namespaceOf(labels: Labels): string | undefined {
  for (const key of NAMESPACE_LABELS) {
    const v = labels[key];
    if (v !== undefined && v !== "") return v;
  }
  return undefined;
}

export class ModeStore extends EventEmitter<{ change: [ModeSettings] }> {
  private current: ModeSettings;
  private writing: Promise<unknown> = Promise.resolve();

  private constructor(
    private readonly file: string | null,
    initial: ModeSettings,
    private readonly shared?: SharedModeSettings,
  ) {
    super();
    this.current = initial;
  }

  /** Settings shared by replicas: changes go through `shared`, and changes made elsewhere are announced. */
  static withShared(shared: SharedModeSettings, initial: ModeSettings): ModeStore {
    const store = new ModeStore(null, initial, shared);
    shared.watch((settings) => {
      if (JSON.stringify(settings) === JSON.stringify(store.current)) return;
      store.current = settings;
      store.emit("change", settings);
    });
    return store;
  }

  /**
   * Loads the settings from `file` (created on first change), or keeps them in memory only without
   * one. A missing file means "mesh default only"; a malformed one is an error naming the field.
   */
  static async open(opts: { file?: string; defaultMode?: EnforcementMode } = {}): Promise<ModeStore> {
    const fallback: ModeSettings = { mesh: opts.defaultMode ?? "enforce", namespaces: {}, workloads: {} };
    if (!opts.file) return new ModeStore(null, fallback);
    let text: string;
    try {
      text = await readFile(opts.file, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return new ModeStore(opts.file, fallback);
      throw err;
    }
    return new ModeStore(opts.file, parseModeSettings(text, opts.file));
  }

  settings(): ModeSettings {
    return this.current;
  }

  /** Sets (or with `null` clears; the mesh default cannot be cleared) the mode of one scope. */
  set(scope: ModeScope, mode: EnforcementMode | null): Promise<ModeSettings> {
    const run = this.writing.then(async () => {
      const next = this.shared
        ? await this.shared.update((current) => applyScope(current, scope, mode))
        : applyScope(this.current, scope, mode);
      if (this.file) await writeAtomically(this.file, JSON.stringify(next, null, 2) + "\n");
      this.current = next;
      this.emit("change", next);
      return next;
    });
    this.writing = run.catch(() => undefined);
    return run;
  }

  /** The mode that applies to a workload. */
  modeFor(workload: { readonly spiffeId?: string; readonly labels: Labels }): EffectiveMode {
    const s = this.current;
    const own = workload.spiffeId === undefined ? undefined : s.workloads[workload.spiffeId];
    if (own) return { mode: own, from: "workload" };
    const ns = namespaceOf(workload.labels);
    const nsMode = ns === undefined ? undefined : s.namespaces[ns];
    if (nsMode) return { mode: nsMode, from: "namespace" };
    return { mode: s.mesh, from: "mesh" };
  }
}

function applyScope(s: ModeSettings, scope: ModeScope, mode: EnforcementMode | null): ModeSettings {
  if (mode !== null && !modeSchema.safeParse(mode).success) {
    throw new ModeStoreError(`mode "${String(mode)}" must be enforce or observe`);
  }
  switch (scope.kind) {
    case "mesh":
      if (mode === null) throw new ModeStoreError("the mesh-wide mode cannot be cleared, only set");
      return { ...s, mesh: mode };
    case "namespace": {
      if (!/^[A-Za-z0-9]([A-Za-z0-9._-]{0,251}[A-Za-z0-9])?$/.test(scope.name)) {
        throw new ModeStoreError(`namespace "${scope.name}" is not a valid name`);
      }
      return { ...s, namespaces: withEntry(s.namespaces, scope.name, mode) };
    }
    case "workload":
      if (!parseSpiffeId(scope.spiffeId)) throw new ModeStoreError(`"${scope.spiffeId}" is not a SPIFFE ID`);
      return { ...s, workloads: withEntry(s.workloads, scope.spiffeId, mode) };
  }
}

function withEntry(
  map: Readonly<Record<string, EnforcementMode>>,
  key: string,
  mode: EnforcementMode | null,
): Record<string, EnforcementMode> {
  const next = { ...map };
  if (mode === null) delete next[key];
  else next[key] = mode;
  return next;
}

async function writeAtomically(file: string, text: string): Promise<void> {
  await mkdir(dirname(file), { recursive: true, mode: 0o700 });
  const tmp = `${file}.tmp-${process.pid}`;
  const fh = await open(tmp, "w", 0o600);
  try {
    await fh.writeFile(text);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, file);
  const dir = await open(dirname(file), "r");
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
}
