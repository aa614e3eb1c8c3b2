import type { Logger } from "pino";
import type { AttestedLabel } from "../../core/labels.ts";
import { AttestationError } from "../attestation/errors.ts";
import type { PodAttestationSettings } from "../attestation/pod-source.ts";
import { KubernetesPods } from "../attestation/pod-source.ts";
import type { WorkloadRecord } from "./registry-file.ts";
import { RegistryError } from "./registry.ts";
import type { WorkloadRegistry } from "./registry.ts";

/** The namespace and service account a Kubernetes workload's record was attested with. */
export function serviceAccountOf(
  record: WorkloadRecord,
): { namespace: string; serviceAccount: string } | null {
  const value = (key: string) =>
    record.attestedLabels.find((l) => l.key === key && l.provenance === "k8s-sat");
  const ns = value("k8s.ns");
  const sa = value("k8s.sa");
  return record.attestor === "k8s-sat" && ns && sa ? { namespace: ns.value, serviceAccount: sa.value } : null;
}

/**
 * The attested labels a Kubernetes workload renews with: its token's claims and the labels its
 * pods share now. Refused (UNAUTHENTICATED, so the sidecar attests again with its token) when no
 * pod of its service account is known to run.
 */
export function renewalLabels(record: WorkloadRecord, pods: KubernetesPods): readonly AttestedLabel[] {
  const sa = serviceAccountOf(record);
  if (!sa) return record.attestedLabels;
  const labels = pods.labelsOf(sa.namespace, sa.serviceAccount);
  if (!labels)
    throw new AttestationError(
      "invalid-renewal",
      `no pod runs as service account ${sa.namespace}/${sa.serviceAccount} according to ${pods.api.url}: attest again`,
    );
  return [...record.attestedLabels.filter((l) => l.provenance !== "k8s-api"), ...labels];
}

export interface PodSyncOptions {
  readonly settings: PodAttestationSettings;
  readonly registry: WorkloadRegistry;
  readonly trustDomain: string;
  readonly maxLeafTtlSeconds: number;
  /** Whether this replica performs revocations (one replica does, the others follow the list). */
  readonly isLeader: () => boolean;
  readonly log?: Logger;
}

/**
 * Keeps Kubernetes workloads' records in step with their pods: a change of the labels a service
 * account's pods share replaces the record's `k8s-api` labels (the registry then asks the sidecars
 * to renew); once no pod runs as the service account, its current certificate is revoked by serial,
 * so the identity is not used from anywhere else, while a new pod may attest afresh. Changes of one
 * identity are applied in order.
 */
export class PodSync {
  readonly pods: KubernetesPods;
  private readonly queues = new Map<string, Promise<void>>();
  /** An issuance records the labels read at attestation: a change seen meanwhile is applied again. */
  private readonly onIssued = (record: WorkloadRecord) => {
    const sa = serviceAccountOf(record);
    if (sa) this.changed(sa.namespace, sa.serviceAccount);
  };

  constructor(private readonly options: PodSyncOptions) {
    this.pods = new KubernetesPods({
      settings: options.settings,
      log: options.log,
      onChange: (ns, sa) => this.changed(ns, sa),
      onListed: (ns) => this.listed(ns),
    });
    options.registry.on("issued", this.onIssued);
  }

  /** Follows the namespaces of the Kubernetes workloads already registered (after a restart). */
  start(): void {
    for (const r of this.options.registry.list()) {
      const sa = serviceAccountOf(r);
      if (sa) this.pods.follow(sa.namespace);
    }
  }

  close(): void {
    this.options.registry.off("issued", this.onIssued);
    this.pods.close();
  }

  /** Every registered service account of `namespace` is checked again (after a full list). */
  listed(namespace: string): void {
    for (const r of this.options.registry.list()) {
      const sa = serviceAccountOf(r);
      if (sa?.namespace === namespace) this.changed(namespace, sa.serviceAccount);
    }
  }

  changed(namespace: string, serviceAccount: string): void {
    const spiffeId = `spiffe://${this.options.trustDomain}/ns/${namespace}/sa/${serviceAccount}`;
    const next = (this.queues.get(spiffeId) ?? Promise.resolve())
      .then(() => this.apply(spiffeId, namespace, serviceAccount))
      .catch((err: unknown) => this.options.log?.error({ err, spiffeId }, "applying pod change failed"))
      .finally(() => {
        if (this.queues.get(spiffeId) === next) this.queues.delete(spiffeId);
      });
    this.queues.set(spiffeId, next);
  }

  private async apply(spiffeId: string, namespace: string, serviceAccount: string): Promise<void> {
    const { registry, log } = this.options;
    const record = registry.get(spiffeId);
    if (!record || record.revoked) return;
    const labels = this.pods.labelsOf(namespace, serviceAccount);
    if (labels) {
      if (await registry.setPodLabels(spiffeId, labels))
        log?.info({ spiffeId, labels: labels.map((l) => `${l.key}=${l.value}`) }, "pod labels changed");
      return;
    }
    if (!this.options.isLeader() || record.notAfterMs <= Date.now()) return;
    try {
      await registry.revokeCertificate(
        record.serial,
        `no pod runs as service account ${namespace}/${serviceAccount} any more`,
        this.options.maxLeafTtlSeconds,
      );
      log?.info({ audit: "certificate-revoked", spiffeId, serial: record.serial }, "last pod gone");
    } catch (err) {
      // Revoked meanwhile (by another replica or an operator) or just expired: nothing left to do.
      if (!(err instanceof RegistryError && err.status === 409)) throw err;
    }
  }
}
