import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { z } from "zod";
import type { RevocationEntry, RevokedCertificate } from "../../core/svid/revocation.ts";
import { revocationEntrySchema, revokedCertificateSchema } from "../../core/svid/revocation.ts";
import { writePrivateFile } from "../ca/secret-files.ts";
import type { AttestedLabel } from "../../core/labels.ts";

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
  /**
   * The certificate before the current one, valid still for about half its life after a renewal:
   * what revoking it by serial finds its workload and expiry by.
   */
  readonly previous: { readonly serial: string; readonly notAfterMs: number } | null;
  /** The labels in the workload's current certificate. */
  readonly issuedLabels: readonly AttestedLabel[];
  readonly revoked: { readonly atMs: number; readonly reason: string } | null;
}

export interface Revocations {
  readonly sequence: number;
  /** Revoked workloads. */
  readonly entries: readonly RevocationEntry[];
  /** Revoked single certificates, each kept until its notAfter. */
  readonly certificates: readonly RevokedCertificate[];
}

export const NO_REVOCATIONS: Revocations = { sequence: 0, entries: [], certificates: [] };

export interface RegistryData {
  readonly workloads: readonly WorkloadRecord[];
  readonly revocations: Revocations;
}

/** Where the workload registry keeps its records and revocations. */
export interface RegistryPersistence {
  load(): Promise<RegistryData>;
  /** Persists one record; `all` gives the whole registry to stores that write it whole. */
  saveWorkload(record: WorkloadRecord, all: () => RegistryData): Promise<void>;
  /**
   * Replaces the revocations if they are still `expected`. Returns null when written, or the
   * revocations found instead (changed through another replica) for the caller to build on.
   */
  saveRevocations(
    expected: Revocations,
    next: Revocations,
    all: () => RegistryData,
  ): Promise<Revocations | null>;
}

const labelSchema = z.object({
  key: z.string(),
  value: z.string(),
  provenance: z.enum(["join-token", "k8s-sat", "k8s-api", "proc", "metadata-file", "static", "scanner"]),
});
const workloadSchema = z.object({
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
  previous: z.object({ serial: z.string(), notAfterMs: z.number() }).nullable().default(null),
  issuedLabels: z.array(labelSchema),
  revoked: z.object({ atMs: z.number(), reason: z.string() }).nullable(),
});
const revocationsSchema = z.object({
  sequence: z.number().int().nonnegative(),
  entries: z.array(revocationEntrySchema),
  // Lists stored before certificates could be revoked one by one have none.
  certificates: z.array(revokedCertificateSchema).default([]),
});
const fileSchema = z.object({ workloads: z.array(workloadSchema), revocations: revocationsSchema });
/** Validates a stored workload record (a file entry or an etcd value), naming `where` and the field at fault. */
export function parseWorkloadRecord(value: unknown, where: string): WorkloadRecord {
  return parseOrThrow(workloadSchema, value, where);
}

export function parseRevocations(value: unknown, where: string): Revocations {
  return parseOrThrow(revocationsSchema, value, where);
}

function parseOrThrow<T>(schema: z.ZodType<T>, value: unknown, where: string): T {
  const parsed = schema.safeParse(value);
  if (!parsed.success)
    throw new Error(
      `${where}: ${parsed.error.issues[0]?.path.join(".")}: ${parsed.error.issues[0]?.message}`,
    );
  return parsed.data;
}

/** The single-process default: the whole registry in `<dataDir>/identity/registry.json` (0600). */
export class FileRegistryPersistence implements RegistryPersistence {
  private readonly path: string;
  private writing: Promise<void> = Promise.resolve();
  private queued: Promise<void> | null = null;
  private latest: (() => RegistryData) | null = null;

  constructor(dataDir: string) {
    this.path = join(dataDir, "identity", "registry.json");
  }

  async load(): Promise<RegistryData> {
    try {
      return parseOrThrow(fileSchema, JSON.parse(await readFile(this.path, "utf8")), this.path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
      return { workloads: [], revocations: NO_REVOCATIONS };
    }
  }

  saveWorkload(_record: WorkloadRecord, all: () => RegistryData): Promise<void> {
    return this.save(all);
  }

  async saveRevocations(_expected: Revocations, _next: Revocations, all: () => RegistryData): Promise<null> {
    await this.save(all);
    return null;
  }

  /**
   * Writes are serialized, and all changes made while a write is in progress are covered by the
   * one write queued behind it (the snapshot is taken when it starts), so a burst of issuances
   * costs two file writes, not one each, and every caller still resolves only once its change is
   * on disk.
   */
  private save(all: () => RegistryData): Promise<void> {
    this.latest = all;
    this.queued ??= this.writing
      .catch(() => undefined)
      .then(() => {
        this.queued = null;
        const snapshot = this.latest?.();
        return writePrivateFile(this.path, JSON.stringify(snapshot));
      });
    this.writing = this.queued;
    return this.queued;
  }
}
