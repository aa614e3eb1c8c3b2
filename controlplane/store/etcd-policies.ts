import type { PolicyText, PolicyTextSource } from "../policy-store/sources.ts";
import type { PolicyWriter } from "../policy-store/writer.ts";
import { checkPolicyText } from "../policy-store/writer.ts";
import type { EtcdState, WatchedPrefix } from "./etcd-state.ts";
import { byCodeUnits } from "../../core/code-unit-order.ts";

const PREFIX = "policies/";

/**
 * Policy YAML in etcd, one key per policy file name: what every replica's policy store compiles,
 * and where `sigil policy apply` through any replica writes. A text is checked before it is stored;
 * one that does not validate never reaches etcd.
 */
export class EtcdPolicies implements PolicyTextSource, PolicyWriter {
  private constructor(
    private readonly etcd: EtcdState,
    private readonly watched: WatchedPrefix,
  ) {}

  static async open(etcd: EtcdState): Promise<EtcdPolicies> {
    return new EtcdPolicies(etcd, await etcd.watchPrefix(PREFIX));
  }

  /** How a file is named in errors and in the policy snapshot. */
  static fileOf(name: string): string {
    return `etcd:${PREFIX}${name}`;
  }

  list(): Promise<PolicyText[]> {
    const texts = this.watched
      .values()
      .sort(([a], [b]) => byCodeUnits(a, b))
      .map(([name, v]) => ({ file: EtcdPolicies.fileOf(name), text: v.value }));
    return Promise.resolve(texts);
  }

  watch(changed: () => void): () => void {
    this.watched.on("change", changed);
    return () => this.watched.off("change", changed);
  }

  async apply(name: string, yaml: string): Promise<void> {
    checkPolicyText(name, yaml, EtcdPolicies.fileOf(name));
    await this.etcd.put(PREFIX + name, yaml, `applying policy file ${name}`);
    await this.watched.settled(() => this.watched.get(name)?.value === yaml);
  }

  async remove(name: string): Promise<boolean> {
    checkPolicyText(name, undefined, EtcdPolicies.fileOf(name));
    const removed = await this.etcd.write(`removing policy file ${name}`, async () => {
      const res = await this.etcd.kv
        .delete()
        .key(PREFIX + name)
        .exec();
      return Number(res.deleted) > 0;
    });
    await this.watched.settled(() => this.watched.get(name) === undefined);
    return removed;
  }
}
