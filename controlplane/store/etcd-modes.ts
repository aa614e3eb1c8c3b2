import type { EnforcementMode } from "../../core/policy/index.ts";
import type { ModeSettings, SharedModeSettings } from "../visibility/mode.ts";
import { parseModeSettings } from "../visibility/mode.ts";
import { StoreConflictError, type EtcdState, type WatchedPrefix } from "./etcd-state.ts";

const KEY = "modes";

/** Enforcement modes in one etcd key, changed by compare-and-swap so concurrent changes both land. */
export class EtcdModeSettings implements SharedModeSettings {
  private constructor(
    private readonly etcd: EtcdState,
    private readonly watched: WatchedPrefix,
  ) {}

  static async open(etcd: EtcdState): Promise<EtcdModeSettings> {
    return new EtcdModeSettings(etcd, await etcd.watchPrefix(KEY));
  }

  /** The stored settings, or the mesh default alone when none are stored yet. */
  initial(defaultMode: EnforcementMode | undefined): ModeSettings {
    const stored = this.watched.get("");
    return stored
      ? parseModeSettings(stored.value, `etcd ${KEY}`)
      : { mesh: defaultMode ?? "enforce", namespaces: {}, workloads: {} };
  }

  async update(change: (current: ModeSettings) => ModeSettings): Promise<ModeSettings> {
    const what = "changing an enforcement mode";
    for (let attempt = 0; attempt < 5; attempt++) {
      const stored = await this.etcd.read(KEY, what);
      const next = change(stored ? parseModeSettings(stored.value, `etcd ${KEY}`) : this.initial(undefined));
      if (await this.etcd.compareAndSwap(KEY, stored, JSON.stringify(next), what)) return next;
    }
    throw new StoreConflictError(`${what}: the settings kept changing through other replicas; retry`);
  }

  watch(listener: (settings: ModeSettings) => void): void {
    this.watched.on("change", (_key, value) => {
      if (value !== undefined) listener(parseModeSettings(value, `etcd ${KEY}`));
    });
  }
}
