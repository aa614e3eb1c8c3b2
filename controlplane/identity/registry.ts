import { EventEmitter } from "node:events";
import type { AttestedLabel } from "../../core/labels.ts";
import { labelKeyProblem, labelValueProblem } from "../../core/labels.ts";
import { mergeByProvenance, reservedKeyProblem } from "../../core/label-provenance.ts";
import type { RevocationEntry, RevocationList } from "../../core/svid/revocation.ts";
import { RevocationIndex } from "../../core/svid/revocation.ts";
import { FileRegistryPersistence } from "./registry-file.ts";
import type {
  Attestor,
  RegistryData,
  RegistryPersistence,
  Revocations,
  WorkloadRecord,
} from "./registry-file.ts";

export type { Attestor, WorkloadRecord } from "./registry-file.ts";

/** The keys a scanner may report. */
const SCANNER_KEY = /^(vuln\.[a-z]{1,32}|image)$/;

export class RegistryError extends Error {
  constructor(
    readonly status: 404 | 409 | 400,
    message: string,
  ) {
    super(message);
  }
}

/**
 * The labels a workload's next certificate carries, one per key by provenance class: operator
 * (static and join-token labels), then orchestrator (Kubernetes), then scanner, then what the
 * node's sidecar reported. A sidecar's report never overrides anyone (see core/label-provenance.ts).
 */
export function effectiveLabels(
  record: Pick<WorkloadRecord, "attestedLabels" | "reportedLabels" | "staticLabels"> & {
    readonly scannerLabels?: readonly AttestedLabel[];
  },
): AttestedLabel[] {
  return mergeByProvenance([
    ...record.staticLabels,
    ...record.attestedLabels,
    ...(record.scannerLabels ?? []),
    ...record.reportedLabels,
  ]);
}

function sameLabels(a: readonly AttestedLabel[], b: readonly AttestedLabel[]): boolean {
  return (
    JSON.stringify(effectiveLabels({ attestedLabels: a, reportedLabels: [], staticLabels: [] })) ===
    JSON.stringify(effectiveLabels({ attestedLabels: b, reportedLabels: [], staticLabels: [] }))
  );
}

interface RegistryEvents {
  /** The workload's labels no longer match its certificate: the sidecar must renew now. */
  "reissue-required": [spiffeId: string, labels: readonly AttestedLabel[]];
  /** The revocation list changed: push it to every enforcement point. */
  revocations: [list: RevocationList];
  /** A certificate was issued and recorded (first issuance or renewal). */
  issued: [record: WorkloadRecord];
}

/**
 * Every workload that has been issued an identity, and the trust domain's revocation state, kept
 * by a `RegistryPersistence`: by default `<dataDir>/identity/registry.json` (0600); with replicas,
 * etcd, whose watch feeds changes made through other replicas back in through `applyWorkload` and
 * `applyRevocations` (emitting the same events as a local change).
 */
export class WorkloadRegistry extends EventEmitter<RegistryEvents> {
  private index: RevocationIndex;

  private constructor(
    private readonly persistence: RegistryPersistence,
    readonly trustDomain: string,
    private readonly workloads: Map<string, WorkloadRecord>,
    private revocations: Revocations,
  ) {
    super();
    this.index = new RevocationIndex(this.revocationList());
  }

  static async open(dataDir: string, trustDomain: string): Promise<WorkloadRegistry> {
    return WorkloadRegistry.openWith(new FileRegistryPersistence(dataDir), trustDomain);
  }

  static async openWith(persistence: RegistryPersistence, trustDomain: string): Promise<WorkloadRegistry> {
    const data = await persistence.load();
    return new WorkloadRegistry(
      persistence,
      trustDomain,
      new Map(data.workloads.map((w) => [w.spiffeId, w])),
      data.revocations,
    );
  }

  /** A record changed elsewhere (another replica): take it and republish as for a local issuance. */
  applyWorkload(record: WorkloadRecord): void {
    const previous = this.workloads.get(record.spiffeId);
    if (previous && JSON.stringify(previous) === JSON.stringify(record)) return;
    this.workloads.set(record.spiffeId, record);
    this.emit("issued", record);
  }

  /** The revocation list changed elsewhere: take it if newer and push it like a local revocation. */
  applyRevocations(next: Revocations): void {
    if (next.sequence <= this.revocations.sequence) return;
    this.revocations = next;
    this.index = new RevocationIndex(this.revocationList());
    this.emit("revocations", this.revocationList());
  }

  list(): WorkloadRecord[] {
    return [...this.workloads.values()].sort((a, b) => a.spiffeId.localeCompare(b.spiffeId));
  }

  get(spiffeId: string): WorkloadRecord | undefined {
    return this.workloads.get(spiffeId);
  }

  revocationList(): RevocationList {
    return {
      trustDomain: this.trustDomain,
      sequence: this.revocations.sequence,
      entries: [...this.revocations.entries],
    };
  }

  revocationIndex(): RevocationIndex {
    return this.index;
  }

  /** Records a new certificate for a workload (creating the record on first issuance). */
  async recordIssuance(issue: {
    spiffeId: string;
    attestor: Attestor;
    attestedLabels: readonly AttestedLabel[];
    attestedAddresses: readonly string[];
    reportedLabels: readonly AttestedLabel[];
    issuedLabels: readonly AttestedLabel[];
    serial: string;
    notAfter: Date;
    now: Date;
  }): Promise<void> {
    const previous = this.workloads.get(issue.spiffeId);
    this.workloads.set(issue.spiffeId, {
      spiffeId: issue.spiffeId,
      attestor: issue.attestor,
      attestedLabels: [...issue.attestedLabels],
      attestedAddresses: [...issue.attestedAddresses],
      reportedLabels: [...issue.reportedLabels],
      staticLabels: previous?.staticLabels ?? [],
      scannerLabels: previous?.scannerLabels ?? [],
      firstSeenMs: previous?.firstSeenMs ?? issue.now.getTime(),
      lastIssuedMs: issue.now.getTime(),
      serial: issue.serial,
      notAfterMs: issue.notAfter.getTime(),
      issuedLabels: [...issue.issuedLabels],
      revoked: null,
    });
    const record = this.workloads.get(issue.spiffeId);
    if (!record) return;
    await this.persistence.saveWorkload(record, () => this.data());
    this.emit("issued", record);
  }

  /**
   * Sets the operator-managed labels of a workload. When that changes what its certificate should
   * carry, emits `reissue-required` so the sidecar is told to renew at once.
   */
  async setStaticLabels(spiffeId: string, labels: Readonly<Record<string, string>>): Promise<WorkloadRecord> {
    const record = this.workloads.get(spiffeId);
    if (!record) throw new RegistryError(404, `no workload ${spiffeId}`);
    const staticLabels: AttestedLabel[] = [];
    for (const [key, value] of Object.entries(labels)) {
      const problem = labelKeyProblem(key) ?? reservedKeyProblem(key) ?? labelValueProblem(key, value);
      if (problem) throw new RegistryError(400, problem);
      // What the cluster or the join token vouched for is the identity itself: change it there.
      const owner = record.attestedLabels.find((l) => l.key === key);
      if (owner)
        throw new RegistryError(
          409,
          `label "${key}" is set by ${owner.provenance} attestation and cannot be overridden`,
        );
      staticLabels.push({ key, value, provenance: "static" });
    }
    return this.replaceLabels(record, { staticLabels });
  }

  /**
   * Records a scanner's findings for a workload: `vuln.*` and `image` only. They outrank what the
   * node's sidecar reports and lose to the operator's labels.
   */
  async setScannerLabels(
    spiffeId: string,
    labels: Readonly<Record<string, string>>,
  ): Promise<WorkloadRecord> {
    const record = this.workloads.get(spiffeId);
    if (!record) throw new RegistryError(404, `no workload ${spiffeId}`);
    const scannerLabels: AttestedLabel[] = [];
    for (const [key, value] of Object.entries(labels)) {
      if (!SCANNER_KEY.test(key))
        throw new RegistryError(400, `label "${key}": a scanner reports only vuln.<severity> and image`);
      const problem = labelValueProblem(key, value);
      if (problem) throw new RegistryError(400, problem);
      scannerLabels.push({ key, value, provenance: "scanner" });
    }
    return this.replaceLabels(record, { scannerLabels });
  }

  /** Stores a change of a record's labels and asks for re-issuance when its certificate differs. */
  private async replaceLabels(
    record: WorkloadRecord,
    change: Partial<Pick<WorkloadRecord, "staticLabels" | "scannerLabels">>,
  ): Promise<WorkloadRecord> {
    const updated = { ...record, ...change };
    this.workloads.set(record.spiffeId, updated);
    await this.persistence.saveWorkload(updated, () => this.data());
    const wanted = effectiveLabels(updated);
    if (!record.revoked && !sameLabels(wanted, record.issuedLabels))
      this.emit("reissue-required", record.spiffeId, wanted);
    return updated;
  }

  /**
   * Revokes a workload: it gets no further certificate, and its current ones are refused by every
   * peer that holds the new revocation list (emitted as `revocations`).
   */
  async revoke(
    spiffeId: string,
    reason: string,
    maxLeafTtlSeconds: number,
    now = new Date(),
  ): Promise<RevocationEntry> {
    const record = this.workloads.get(spiffeId);
    if (!record) throw new RegistryError(404, `no workload ${spiffeId}`);
    if (record.revoked)
      throw new RegistryError(
        409,
        `${spiffeId} was already revoked at ${new Date(record.revoked.atMs).toISOString()}`,
      );
    const entry: RevocationEntry = {
      spiffeId,
      revokedAtMs: now.getTime(),
      expiresAtMs: Math.max(record.notAfterMs, now.getTime() + maxLeafTtlSeconds * 1000),
      reason,
    };
    const revokedRecord = { ...record, revoked: { atMs: entry.revokedAtMs, reason } };
    this.workloads.set(spiffeId, revokedRecord);
    await this.persistence.saveWorkload(revokedRecord, () => this.data());
    let base = this.revocations;
    // A compare-and-swap: a revocation made concurrently through another replica is kept, not overwritten.
    for (let attempt = 0; ; attempt++) {
      const next = {
        sequence: base.sequence + 1,
        entries: [...base.entries.filter((e) => e.expiresAtMs > now.getTime()), entry],
      };
      const fresher = await this.persistence.saveRevocations(base, next, () => this.data(next));
      if (!fresher) {
        this.revocations = next;
        break;
      }
      if (attempt >= 5)
        throw new RegistryError(
          409,
          `revoking ${spiffeId}: the revocation list kept changing through other replicas; retry`,
        );
      base = fresher;
    }
    this.index = new RevocationIndex(this.revocationList());
    this.emit("revocations", this.revocationList());
    return entry;
  }

  private data(revocations = this.revocations): RegistryData {
    return { workloads: [...this.workloads.values()], revocations };
  }
}
