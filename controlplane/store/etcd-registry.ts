import type { WorkloadRecord, WorkloadRegistry } from "../identity/registry.ts";
import type { RegistryData, RegistryPersistence, Revocations } from "../identity/registry-file.ts";
import { NO_REVOCATIONS, parseRevocations, parseWorkloadRecord } from "../identity/registry-file.ts";
import type { EtcdState, WatchedPrefix } from "./etcd-state.ts";

const WORKLOADS = "workloads/";
const REVOCATIONS = "revocations";

/**
 * The workload registry in etcd: one key per workload record and one for the revocation list,
 * which only ever moves by compare-and-swap so concurrent revocations through two replicas both
 * land. `attach` feeds changes made through other replicas into the registry.
 */
export class EtcdRegistryPersistence implements RegistryPersistence {
  private constructor(
    private readonly etcd: EtcdState,
    private readonly workloads: WatchedPrefix,
    private readonly revocations: WatchedPrefix,
  ) {}

  static async open(etcd: EtcdState): Promise<EtcdRegistryPersistence> {
    return new EtcdRegistryPersistence(
      etcd,
      await etcd.watchPrefix(WORKLOADS),
      await etcd.watchPrefix(REVOCATIONS),
    );
  }

  load(): Promise<RegistryData> {
    const workloads = this.workloads
      .values()
      .map(([key, v]) => parseWorkloadRecord(JSON.parse(v.value), `etcd ${WORKLOADS}${key}`));
    return Promise.resolve({ workloads, revocations: this.currentRevocations() });
  }

  attach(registry: WorkloadRegistry): void {
    this.workloads.on("change", (key, value) => {
      if (value !== undefined)
        registry.applyWorkload(parseWorkloadRecord(JSON.parse(value), `etcd ${WORKLOADS}${key}`));
    });
    this.revocations.on("change", () => registry.applyRevocations(this.currentRevocations()));
  }

  async saveWorkload(record: WorkloadRecord): Promise<void> {
    await this.etcd.put(WORKLOADS + record.spiffeId, JSON.stringify(record), `recording ${record.spiffeId}`);
  }

  async saveRevocations(expected: Revocations, next: Revocations): Promise<Revocations | null> {
    const what = "updating the revocation list";
    const stored = await this.etcd.read(REVOCATIONS, what);
    const current = stored ? parseRevocations(JSON.parse(stored.value), `etcd ${REVOCATIONS}`) : undefined;
    if ((current?.sequence ?? 0) !== expected.sequence) return current ?? NO_REVOCATIONS;
    if (await this.etcd.compareAndSwap(REVOCATIONS, stored, JSON.stringify(next), what)) return null;
    const after = await this.etcd.read(REVOCATIONS, what);
    return after ? parseRevocations(JSON.parse(after.value), `etcd ${REVOCATIONS}`) : expected;
  }

  private currentRevocations(): Revocations {
    const stored = this.revocations.get("");
    return stored ? parseRevocations(JSON.parse(stored.value), `etcd ${REVOCATIONS}`) : NO_REVOCATIONS;
  }
}
