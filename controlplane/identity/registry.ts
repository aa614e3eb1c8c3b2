import { EventEmitter } from "node:events";
import type { AttestedLabel } from "../../core/labels.ts";
import { labelKeyProblem, labelValueProblem } from "../../core/labels.ts";
import { mergeByProvenance, reservedKeyProblem } from "../../core/label-provenance.ts";
import type { RevocationEntry, RevocationList, RevokedCertificate } from "../../core/svid/revocation.ts";
import { canonicalSerial, RevocationIndex, serialKey } from "../../core/svid/revocation.ts";
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

/** A partial change of a workload's operator labels. */
export interface StaticLabelChange {
  readonly set: Readonly<Record<string, string>>;
  readonly remove: readonly string[];
  /** Whether a key in `set` may replace a different value already there. */
  readonly overwrite: boolean;
}

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
      certificates: [...this.revocations.certificates],
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
      previous: previous ? { serial: previous.serial, notAfterMs: previous.notAfterMs } : null,
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
      // Pod labels are only the cluster's description of it: the operator's value wins those.
      const owner = record.attestedLabels.find((l) => l.key === key && l.provenance !== "k8s-api");
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
   * Changes some of a workload's operator labels, kubectl-style: `set` adds keys (and changes an
   * existing value only with `overwrite`), `remove` drops keys (absent ones are ignored, so a retry
   * is harmless). The merge happens here, not in the client, so two operators labelling the same
   * workload at once do not undo each other's change.
   */
  async changeStaticLabels(spiffeId: string, change: StaticLabelChange): Promise<WorkloadRecord> {
    const record = this.workloads.get(spiffeId);
    if (!record) throw new RegistryError(404, `no workload ${spiffeId}`);
    const labels = new Map(record.staticLabels.map((l) => [l.key, l.value]));
    for (const [key, value] of Object.entries(change.set)) {
      const current = labels.get(key);
      if (current !== undefined && current !== value && !change.overwrite)
        throw new RegistryError(
          409,
          `label "${key}" is already "${current}" on ${spiffeId}; overwrite it explicitly to change it`,
        );
      labels.set(key, value);
    }
    for (const key of change.remove) {
      if (key in change.set) throw new RegistryError(400, `label "${key}" is both set and removed`);
      labels.delete(key);
    }
    return this.setStaticLabels(spiffeId, Object.fromEntries(labels));
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

  /**
   * Replaces the pod labels (provenance `k8s-api`) of a Kubernetes workload's identity with what
   * the API server reports now. Returns whether the record changed; a workload not attested by a
   * service-account token, or unknown, is left alone.
   */
  async setPodLabels(spiffeId: string, labels: readonly AttestedLabel[]): Promise<boolean> {
    const record = this.workloads.get(spiffeId);
    if (record?.attestor !== "k8s-sat") return false;
    const attestedLabels = [...record.attestedLabels.filter((l) => l.provenance !== "k8s-api"), ...labels];
    if (JSON.stringify(attestedLabels) === JSON.stringify(record.attestedLabels)) return false;
    await this.replaceLabels(record, { attestedLabels });
    return true;
  }

  /** Stores a change of a record's labels and asks for re-issuance when its certificate differs. */
  private async replaceLabels(
    record: WorkloadRecord,
    change: Partial<Pick<WorkloadRecord, "staticLabels" | "scannerLabels" | "attestedLabels">>,
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
    await this.changeRevocations(`revoking ${spiffeId}`, now, (base) => ({
      ...base,
      entries: [...base.entries, entry],
    }));
    return entry;
  }

  /**
   * Revokes one certificate by serial: every peer that holds the new list refuses it, the control
   * plane refuses it for renewal and ends the streams it authenticated, and its workload may attest
   * again for a new one. The entry is kept until the certificate's notAfter when the serial is a
   * workload's current or previous certificate; for any other serial until the latest notAfter a
   * certificate issued by now can have.
   */
  async revokeCertificate(
    serialText: string,
    reason: string,
    maxLeafTtlSeconds: number,
    now = new Date(),
  ): Promise<RevokedCertificate> {
    let serial: string;
    try {
      serial = canonicalSerial(serialText);
    } catch (err) {
      throw new RegistryError(400, (err as Error).message);
    }
    const holder = this.certificateHolder(serial);
    if (holder && holder.notAfterMs <= now.getTime())
      throw new RegistryError(
        409,
        `certificate ${serial} of ${holder.spiffeId} expired at ${new Date(holder.notAfterMs).toISOString()}: nothing to revoke`,
      );
    const entry: RevokedCertificate = {
      serial,
      spiffeId: holder?.spiffeId ?? "",
      revokedAtMs: now.getTime(),
      expiresAtMs: holder?.notAfterMs ?? now.getTime() + maxLeafTtlSeconds * 1000,
      reason,
    };
    await this.changeRevocations(`revoking certificate ${serial}`, now, (base) => {
      const previous = base.certificates.find((c) => c.serial === serial);
      if (previous)
        throw new RegistryError(
          409,
          `certificate ${serial} was already revoked at ${new Date(previous.revokedAtMs).toISOString()}`,
        );
      return { ...base, certificates: [...base.certificates, entry] };
    });
    return entry;
  }

  /** The workload whose current or previous certificate has `serial` (canonical), with its notAfter. */
  private certificateHolder(serial: string): { spiffeId: string; notAfterMs: number } | undefined {
    for (const w of this.workloads.values()) {
      if (serialKey(w.serial) === serial) return { spiffeId: w.spiffeId, notAfterMs: w.notAfterMs };
      if (w.previous && serialKey(w.previous.serial) === serial)
        return { spiffeId: w.spiffeId, notAfterMs: w.previous.notAfterMs };
    }
    return undefined;
  }

  /**
   * Drops the entries whose certificates have all expired by `now` (a revoked workload's once every
   * certificate issued before its revocation has expired, a revoked certificate's at its notAfter),
   * and pushes the shorter list. Returns whether there was anything to drop.
   */
  async pruneRevocations(now = new Date()): Promise<boolean> {
    const expired = (r: Revocations) =>
      [...r.entries, ...r.certificates].some((e) => e.expiresAtMs <= now.getTime());
    if (!expired(this.revocations)) return false;
    await this.changeRevocations("pruning expired revocations", now, (base) => base, expired);
    return true;
  }

  /**
   * Writes `change(current list)` with the expired entries dropped, as a compare-and-swap: a change
   * made concurrently through another replica is kept, not overwritten. `wanted` decides again,
   * on the list found, whether anything is left to write.
   */
  private async changeRevocations(
    what: string,
    now: Date,
    change: (base: Revocations) => Revocations,
    wanted: (base: Revocations) => boolean = () => true,
  ): Promise<void> {
    const live = (e: { expiresAtMs: number }) => e.expiresAtMs > now.getTime();
    let base = this.revocations;
    for (let attempt = 0; ; attempt++) {
      if (!wanted(base)) {
        this.applyRevocations(base);
        return;
      }
      const changed = change(base);
      const next: Revocations = {
        sequence: base.sequence + 1,
        entries: changed.entries.filter(live),
        certificates: changed.certificates.filter(live),
      };
      const fresher = await this.persistence.saveRevocations(base, next, () => this.data(next));
      if (!fresher) {
        this.revocations = next;
        break;
      }
      if (attempt >= 5)
        throw new RegistryError(
          409,
          `${what}: the revocation list kept changing through other replicas; retry`,
        );
      base = fresher;
    }
    this.index = new RevocationIndex(this.revocationList());
    this.emit("revocations", this.revocationList());
  }

  private data(revocations = this.revocations): RegistryData {
    return { workloads: [...this.workloads.values()], revocations };
  }
}
