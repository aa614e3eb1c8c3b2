import type { Logger } from "pino";
import type { RevocationList } from "../../core/svid/revocation.ts";
import type { TrustBundle } from "../../core/svid/bundle.ts";
import type { ImportedCa } from "../ca/authority.ts";
import { CertificateAuthority } from "../ca/authority.ts";
import { FileCaStorage, type CaStorage } from "../ca/storage.ts";
import { JoinTokenStore, type JoinTokens } from "../attestation/join-tokens.ts";
import type { KubernetesAttestorConfig } from "../attestation/kubernetes.ts";
import { KubernetesAttestor } from "../attestation/kubernetes.ts";
import { IdentityIssuer } from "./issuer.ts";
import { PodSync } from "./pod-sync.ts";
import { WorkloadRegistry } from "./registry.ts";
import type { RegistryPersistence } from "./registry-file.ts";

/** Identity state kept outside the data directory (etcd), shared by replicas. */
export interface SharedIdentityState {
  readonly caStorage: CaStorage;
  readonly tokens: JoinTokens;
  readonly registry: RegistryPersistence;
  /** Follow changes made through other replicas. */
  attach(ca: CertificateAuthority, registry: WorkloadRegistry): void;
  /** Whether this replica runs the singleton duties (retiring CA generations) now. */
  isLeader(): boolean;
}

export interface IdentityPlaneOptions {
  readonly dataDir: string;
  readonly trustDomain?: string;
  readonly kubernetes?: KubernetesAttestorConfig;
  readonly importedCa?: ImportedCa;
  readonly defaultTtlSeconds?: number;
  readonly maxLeafTtlSeconds?: number;
  /** How often to drop CA generations whose overlap ended and revocations whose certificates expired. */
  readonly maintenanceIntervalMs?: number;
  readonly log?: Logger;
  /** Keep the CA, tokens and registry here instead of the data directory. */
  readonly shared?: SharedIdentityState;
}

/**
 * The control plane's identity side assembled from the data directory: CA, join tokens, workload
 * registry with revocations, and the issuer. The lead wires:
 *  - `ca.on("bundle", ...)`            → push the TrustBundle resource over xDS;
 *  - `registry.on("revocations", ...)` → push the RevocationList resource over xDS;
 *  - `registry.on("reissue-required", ...)` → tell that workload's sidecar to renew now.
 */
export interface IdentityPlane {
  readonly ca: CertificateAuthority;
  readonly tokens: JoinTokens;
  readonly registry: WorkloadRegistry;
  readonly issuer: IdentityIssuer;
  bundle(): TrustBundle;
  revocations(): RevocationList;
  close(): void;
}

export async function openIdentityPlane(options: IdentityPlaneOptions): Promise<IdentityPlane> {
  const { shared } = options;
  const storage = shared?.caStorage ?? new FileCaStorage(options.dataDir);
  const ca = await CertificateAuthority.open({
    dataDir: options.dataDir,
    trustDomain: options.trustDomain,
    imported: (await storage.readState()) !== undefined ? undefined : options.importedCa,
    maxLeafTtlSeconds: options.maxLeafTtlSeconds,
    storage,
  });
  const tokens = shared?.tokens ?? (await JoinTokenStore.open(options.dataDir));
  const registry = shared
    ? await WorkloadRegistry.openWith(shared.registry, ca.trustDomain)
    : await WorkloadRegistry.open(options.dataDir, ca.trustDomain);
  shared?.attach(ca, registry);
  const apiServer = options.kubernetes?.apiServer;
  const podSync = apiServer
    ? new PodSync({
        settings: apiServer,
        registry,
        trustDomain: ca.trustDomain,
        maxLeafTtlSeconds: ca.maxLeafTtlSeconds,
        isLeader: () => shared?.isLeader() ?? true,
        log: options.log,
      })
    : undefined;
  podSync?.start();
  const issuer = new IdentityIssuer({
    ca,
    tokens,
    registry,
    kubernetes: options.kubernetes ? new KubernetesAttestor(options.kubernetes, podSync?.pods) : undefined,
    pods: podSync?.pods,
    defaultTtlSeconds: options.defaultTtlSeconds,
  });
  const timer = setInterval(() => {
    if (shared && !shared.isLeader()) return;
    ca.retireExpired().catch((err: unknown) => options.log?.error({ err }, "retiring CA generations failed"));
    // Entries whose certificates have all expired protect nothing: drop them from what every sidecar holds.
    registry
      .pruneRevocations()
      .catch((err: unknown) => options.log?.error({ err }, "pruning expired revocations failed"));
  }, options.maintenanceIntervalMs ?? 60_000);
  timer.unref();
  return {
    ca,
    tokens,
    registry,
    issuer,
    bundle: () => ca.bundle(),
    revocations: () => registry.revocationList(),
    close: () => {
      clearInterval(timer);
      podSync?.close();
    },
  };
}
