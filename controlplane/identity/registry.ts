import { EventEmitter } from "node:events";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { z } from "zod";
import type { AttestedLabel } from "../../core/labels.ts";
import { labelKeyProblem, labelValueProblem } from "../../core/labels.ts";
import { mergeByProvenance, reservedKeyProblem } from "../../core/label-provenance.ts";

/** The keys a scanner may report. */
const SCANNER_KEY = /^(vuln\.[a-z]{1,32}|image)$/;
import type { RevocationEntry, RevocationList } from "../../core/svid/revocation.ts";
import { RevocationIndex, revocationEntrySchema } from "../../core/svid/revocation.ts";
import { writePrivateFile } from "../ca/secret-files.ts";

/** How a workload first proved itself. */
export type Attestor = "join-token" | "k8s-sat";

export interface WorkloadRecord {
  readonly spiffeId: string;
  readonly attestor: Attestor;
  /** Vouched for by the attestor (join-token scope, cluster claims). */
  readonly attestedLabels: readonly AttestedLabel[];
  /** Addresses the attestor vouched for (a join token's registered addresses): the workload owns them. */
  readonly attestedAddresses: readonly string[];
  /** Reported by the sidecar at its last issuance (process, metadata file). */
  readonly reportedLabels: readonly AttestedLabel[];
  /** Set by an operator through the API. */
  readonly staticLabels: readonly AttestedLabel[];
  /** Findings a scanner posted through the API (`vuln.*`, `image`). */
  readonly scannerLabels: readonly AttestedLabel[];
  readonly firstSeenMs: number;
  readonly lastIssuedMs: number;
  readonly serial: string;
  readonly notAfterMs: number;
  /** The labels in the workload's current certificate. */
  readonly issuedLabels: readonly AttestedLabel[];
  readonly revoked: { readonly atMs: number; readonly reason: string } | null;
}

export class RegistryError extends Error {
  constructor(
    readonly status: 404 | 409 | 400,
    message: string,
  ) {
    super(message);
  }
}

const labelSchema = z.object({
  key: z.string(),
  value: z.string(),
  provenance: z.enum(["join-token", "k8s-sat", "proc", "metadata-file", "static", "scanner"]),
});
const fileSchema = z.object({
  workloads: z.array(
    z.object({
      spiffeId: z.string(),
      attestor: z.enum(["join-token", "k8s-sat"]),
      attestedLabels: z.array(labelSchema),
      attestedAddresses: z.array(z.string()).default([]),
      reportedLabels: z.array(labelSchema),
      staticLabels: z.array(labelSchema),
      scannerLabels: z.array(labelSchema).default([]),
      firstSeenMs: z.number(),
      lastIssuedMs: z.number(),
      serial: z.string(),
      notAfterMs: z.number(),
      issuedLabels: z.array(labelSchema),
      revoked: z.object({ atMs: z.number(), reason: z.string() }).nullable(),
    }),
  ),
  revocations: z.object({
    sequence: z.number().int().nonnegative(),
    entries: z.array(revocationEntrySchema),
  }),
});

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
 * Every workload that has been issued an identity, and the trust domain's revocation state.
 * Persisted in `<dataDir>/identity/registry.json` (0600).
 */
export class WorkloadRegistry extends EventEmitter<RegistryEvents> {
  private index: RevocationIndex;

  private constructor(
    private readonly path: string,
    readonly trustDomain: string,
    private readonly workloads: Map<string, WorkloadRecord>,
    private revocations: { sequence: number; entries: RevocationEntry[] },
  ) {
    super();
    this.index = new RevocationIndex(this.revocationList());
  }

  static async open(dataDir: string, trustDomain: string): Promise<WorkloadRegistry> {
    const path = join(dataDir, "identity", "registry.json");
    let data: z.infer<typeof fileSchema> = { workloads: [], revocations: { sequence: 0, entries: [] } };
    try {
      const parsed = fileSchema.safeParse(JSON.parse(await readFile(path, "utf8")));
      if (!parsed.success) {
        throw new Error(
          `${path}: ${parsed.error.issues[0]?.path.join(".")}: ${parsed.error.issues[0]?.message}`,
        );
      }
      data = parsed.data;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    }
    return new WorkloadRegistry(
      path,
      trustDomain,
      new Map(data.workloads.map((w) => [w.spiffeId, w])),
      data.revocations,
    );
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
    await this.save();
    const record = this.workloads.get(issue.spiffeId);
    if (record) this.emit("issued", record);
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
    await this.save();
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
    this.workloads.set(spiffeId, { ...record, revoked: { atMs: entry.revokedAtMs, reason } });
    this.revocations = {
      sequence: this.revocations.sequence + 1,
      entries: [...this.revocations.entries.filter((e) => e.expiresAtMs > now.getTime()), entry],
    };
    this.index = new RevocationIndex(this.revocationList());
    await this.save();
    this.emit("revocations", this.revocationList());
    return entry;
  }

  private writing: Promise<void> = Promise.resolve();
  private queued: Promise<void> | null = null;

  /**
   * Persists the current state. Writes are serialized, and all changes made while a write is in
   * progress are covered by the one write queued behind it (the snapshot is taken when it starts),
   * so a burst of issuances costs two file writes, not one each, and every caller still resolves
   * only once its change is on disk.
   */
  private save(): Promise<void> {
    this.queued ??= this.writing
      .catch(() => undefined)
      .then(() => {
        this.queued = null;
        const snapshot = JSON.stringify({
          workloads: [...this.workloads.values()],
          revocations: this.revocations,
        });
        return writePrivateFile(this.path, snapshot);
      });
    this.writing = this.queued;
    return this.queued;
  }
}
