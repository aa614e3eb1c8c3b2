import { readFileSync } from "node:fs";
import type { ResourceRequirements } from "kubernetes-types/core/v1.js";

/**
 * Where the injected sidecar finds its trust bundle and identity proof.
 *
 * - `kubernetes`: the bundle from a ConfigMap, and a projected service-account token (audience,
 *   expiry) that the control plane verifies against the cluster's issuer (Kubernetes attestation).
 * - `podman`: pods run by `podman kube play` outside a cluster: the bundle and a one-time join token
 *   per pod come from host directories (`<hostDir>/bundle.pem`, `<hostDir>/tokens/<pod>/token`),
 *   and podman's init-container annotation is set so the capture container runs on every start.
 */
export type InjectRuntime =
  | {
      readonly kind: "kubernetes";
      readonly bundleConfigMap: string;
      readonly tokenAudience: string;
      readonly tokenExpirationSeconds: number;
    }
  | { readonly kind: "podman"; readonly hostDir: string };

export interface InjectSettings {
  readonly image: string;
  readonly imagePullPolicy: "IfNotPresent" | "Never" | "Always";
  /** The control plane's gRPC address (`host:port`) as the pods reach it. */
  readonly controlPlane: string;
  readonly trustDomain: string;
  readonly logLevel: "fatal" | "error" | "warn" | "info" | "debug" | "trace" | "silent";
  readonly sidecarResources: ResourceRequirements;
  readonly initResources: ResourceRequirements;
  readonly runtime: InjectRuntime;
}

const packageJson = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as {
  version: string;
};

/** Sigil's version: the image tag and the `sigil.io/injected` annotation's value. */
export const SIGIL_VERSION: string = packageJson.version;

export const DEFAULT_SETTINGS: InjectSettings = {
  image: `sigil:${SIGIL_VERSION}`,
  imagePullPolicy: "IfNotPresent",
  controlPlane: "sigil-controlplane.sigil-system.svc:15010",
  trustDomain: "sigil.local",
  logLevel: "info",
  sidecarResources: {
    requests: { cpu: "50m", memory: "64Mi" },
    limits: { memory: "256Mi" },
  },
  initResources: {
    requests: { cpu: "10m", memory: "32Mi" },
    limits: { memory: "128Mi" },
  },
  runtime: {
    kind: "kubernetes",
    bundleConfigMap: "sigil-trust-bundle",
    tokenAudience: "sigil",
    tokenExpirationSeconds: 3600,
  },
};

/** The default settings with some replaced (the runtime as a whole). */
export function injectSettings(overrides: Partial<InjectSettings> = {}): InjectSettings {
  return { ...DEFAULT_SETTINGS, ...overrides };
}
