import type { Logger } from "pino";
import type { AttestedLabel } from "../../core/labels.ts";
import { AttestationError } from "./errors.ts";
import type { KubeApiSettings } from "./kube-api.ts";
import { KubeApiClient, KubeApiError } from "./kube-api.ts";
import type { TokenPodClaims } from "./pod-labels.ts";
import { PodShapeError, podFacts, podMismatch, sharedPodLabels } from "./pod-labels.ts";
import type { Backoff } from "./pod-watch.ts";
import { NamespacePodWatch } from "./pod-watch.ts";

/** The API server the pod attestor reads pods from, and what to do while it cannot be reached. */
export interface PodAttestationSettings extends KubeApiSettings {
  /**
   * `refuse` (default): no identity while the API server cannot say which pod the token belongs
   * to. `token-claims-only`: issue on the verified token alone, without pod labels (an explicit
   * opt-out of the uid check, for clusters where the control plane may not read pods).
   */
  readonly whenUnavailable?: "refuse" | "token-claims-only";
  /** Bound on waiting for a namespace's first pod list at attestation (default 5 s). */
  readonly syncTimeoutMs?: number;
  readonly backoff?: Backoff;
}

export interface PodSourceOptions {
  readonly settings: PodAttestationSettings;
  /** A service account's pods or their labels changed (see `labelsOf`). */
  readonly onChange: (namespace: string, serviceAccount: string) => void;
  /** The namespace's pods were listed in full (first, or again after 410 Gone). */
  readonly onListed?: (namespace: string) => void;
  readonly log?: Logger;
}

/**
 * Pods as the cluster's API server knows them, for attestation and afterwards: checks the pod a
 * service-account token was issued to, and follows each namespace that holds an attested workload
 * with a watch, so a pod's label change or deletion reaches the registry.
 */
export class KubernetesPods {
  readonly api: KubeApiClient;
  private readonly watches = new Map<string, NamespacePodWatch>();

  constructor(private readonly options: PodSourceOptions) {
    this.api = new KubeApiClient(options.settings);
  }

  /** Follows the namespace's pods from now on (idempotent). */
  follow(namespace: string): NamespacePodWatch {
    let watch = this.watches.get(namespace);
    if (!watch) {
      watch = new NamespacePodWatch({
        api: this.api,
        namespace,
        backoff: this.options.settings.backoff,
        log: this.options.log,
        onChange: (accounts) => {
          for (const sa of accounts) this.options.onChange(namespace, sa);
        },
        onListed: () => this.options.onListed?.(namespace),
      });
      this.watches.set(namespace, watch);
      watch.start();
    }
    return watch;
  }

  /**
   * Reads the token's pod from the API server and refuses unless it is the pod the token was
   * issued to (same uid, same service account, not finished). Returns the pod labels the
   * service account's live pods share, or null when the API server is unreachable and the
   * settings allow issuing on the token alone.
   */
  async attestPod(claims: TokenPodClaims): Promise<AttestedLabel[] | null> {
    const { settings } = this.options;
    const watch = this.follow(claims.namespace);
    try {
      const pod = podFacts(await this.api.getPod(claims.namespace, claims.pod));
      const mismatch = podMismatch(claims, pod);
      if (mismatch)
        throw new AttestationError("invalid-sa-token", `service-account token refused: ${mismatch}`);
      watch.upsert(pod);
      await watch.whenSynced(settings.syncTimeoutMs ?? 5_000);
    } catch (err) {
      if (err instanceof AttestationError) throw err;
      if (err instanceof KubeApiError && err.status === 404)
        throw new AttestationError(
          "invalid-sa-token",
          `service-account token refused: pod ${claims.namespace}/${claims.pod} does not exist (${err.message})`,
        );
      if (err instanceof PodShapeError)
        throw new AttestationError("attestor-unavailable", `${this.api.url}: ${err.message}`);
      if (settings.whenUnavailable === "token-claims-only") {
        this.options.log?.warn({ err }, "pod not checked: issuing on the token's claims alone");
        return null;
      }
      throw new AttestationError(
        "attestor-unavailable",
        `cannot check pod ${claims.namespace}/${claims.pod} with the Kubernetes API server: ${(err as Error).message}`,
      );
    }
    return this.labelsOf(claims.namespace, claims.serviceAccount) ?? [];
  }

  /**
   * The labels the live pods running as `serviceAccount` share (the identity's orchestrator
   * labels), or undefined when no pod of it is known to run (or the namespace is not followed).
   */
  labelsOf(namespace: string, serviceAccount: string): AttestedLabel[] | undefined {
    const pods = this.watches.get(namespace)?.podsOf(serviceAccount) ?? [];
    if (pods.length === 0) return undefined;
    const { labels, skipped } = sharedPodLabels(pods);
    if (skipped.length > 0)
      this.options.log?.debug({ namespace, serviceAccount, skipped }, "pod labels Sigil cannot carry");
    return labels;
  }

  close(): void {
    for (const w of this.watches.values()) w.stop();
    this.watches.clear();
  }
}
