import { createHash } from "node:crypto";
import type { Container, EnvVar, Volume, VolumeMount } from "kubernetes-types/core/v1.js";
import type { PodAnnotations } from "./annotations.ts";
import {
  ADMIN_PORT,
  BUNDLE_DIR,
  BUNDLE_FILE,
  FAST_PATH_MARK_MASK,
  IMAGE_ENTRY,
  IMAGE_NODE,
  INBOUND_PORT,
  INIT_CONTAINER,
  OUTBOUND_PORT,
  SIDECAR_CONTAINER,
  SIDECAR_NODE_FLAGS,
  SIDECAR_UID,
  TOKEN_DIR,
  TOKEN_FILE,
  USER_ACCESS_DIR,
  USER_ACCESS_FILE,
} from "./constants.ts";
import type { InjectSettings } from "./settings.ts";

/** The pod facts the injected containers depend on. */
export interface PodFacts {
  /** The pod's name when known (a bare Pod); templates get theirs from the downward API. */
  readonly podName: string | undefined;
  readonly appPorts: readonly number[];
  readonly annotations: PodAnnotations;
}

export const VOLUMES = {
  bundle: "sigil-bundle",
  token: "sigil-token",
  tmp: "sigil-tmp",
  userAccess: "sigil-user-access",
} as const;

/**
 * The sidecar's scratch volume. Podman turns an emptyDir into a named volume shared by every pod
 * that uses the name, so there it carries the pod's name to stay the pod's own.
 */
export function scratchVolumeName(settings: InjectSettings, podName: string | undefined): string {
  if (settings.runtime.kind !== "podman" || podName === undefined) return VOLUMES.tmp;
  const name = `${VOLUMES.tmp}-${podName}`;
  return name.length <= 63
    ? name
    : `${VOLUMES.tmp}-${createHash("sha256").update(podName).digest("hex").slice(0, 16)}`;
}

/** Whether a pod volume is one of Sigil's own, so a second injection replaces rather than adds it. */
export const isSigilVolume = (name: string): boolean =>
  name === VOLUMES.bundle ||
  name === VOLUMES.token ||
  name === VOLUMES.tmp ||
  name === VOLUMES.userAccess ||
  name.startsWith(`${VOLUMES.tmp}-`);

const list = (flag: string, values: readonly (number | string)[]): string[] =>
  values.length === 0 ? [] : [`--${flag}=${values.join(",")}`];

/** `sigil init`: installs capture and exits. Root with NET_ADMIN and NET_RAW, nothing else. */
export function initContainer(settings: InjectSettings, pod: PodFacts): Container {
  const a = pod.annotations;
  return {
    name: INIT_CONTAINER,
    image: settings.image,
    imagePullPolicy: settings.imagePullPolicy,
    command: [IMAGE_NODE, IMAGE_ENTRY, "init"],
    args: [
      `--proxy-uid=${SIDECAR_UID}`,
      `--inbound-port=${INBOUND_PORT}`,
      `--outbound-port=${OUTBOUND_PORT}`,
      ...list("exclude-inbound-ports", a.excludeInboundPorts),
      ...list("exclude-outbound-ports", a.excludeOutboundPorts),
      ...list("exclude-outbound-cidrs", a.excludeOutboundCidrs),
      // The sidecar's fast-path verdicts come before capture's redirect: without this, the
      // connections it accepted would still be redirected to the proxy.
      ...(a.fastPathPorts.length > 0 ? [`--fast-path-mark-mask=${FAST_PATH_MARK_MASK}`] : []),
    ],
    resources: settings.initResources,
    securityContext: {
      runAsUser: 0,
      runAsGroup: 0,
      runAsNonRoot: false,
      privileged: false,
      allowPrivilegeEscalation: false,
      capabilities: { drop: ["ALL"], add: ["NET_ADMIN", "NET_RAW"] },
    },
  };
}

/** The sidecar: the capture-exempt uid, a read-only root, ready once it holds an SVID and policy. */
export function sidecarContainer(settings: InjectSettings, pod: PodFacts): Container {
  const a = pod.annotations;
  const tokenFlag =
    settings.runtime.kind === "kubernetes" ? "--service-account-token-file" : "--join-token-file";
  const env: EnvVar[] = [{ name: "SIGIL_POD_NAME", valueFrom: { fieldRef: { fieldPath: "metadata.name" } } }];
  const mounts: VolumeMount[] = [
    { name: VOLUMES.bundle, mountPath: BUNDLE_DIR, readOnly: true },
    { name: VOLUMES.token, mountPath: TOKEN_DIR, readOnly: true },
    { name: scratchVolumeName(settings, pod.podName), mountPath: "/tmp" },
    ...(a.userAccessConfig === undefined
      ? []
      : [{ name: VOLUMES.userAccess, mountPath: USER_ACCESS_DIR, readOnly: true }]),
  ];
  return {
    name: SIDECAR_CONTAINER,
    image: settings.image,
    imagePullPolicy: settings.imagePullPolicy,
    command: [IMAGE_NODE, ...SIDECAR_NODE_FLAGS, IMAGE_ENTRY, "sidecar"],
    args: [
      `--control-plane=${settings.controlPlane}`,
      `--control-plane-ca=${BUNDLE_DIR}/${BUNDLE_FILE}`,
      `--trust-domain=${settings.trustDomain}`,
      `--workload-name=${pod.podName ?? "$(SIGIL_POD_NAME)"}`,
      `${tokenFlag}=${TOKEN_DIR}/${TOKEN_FILE}`,
      // A join token is redeemed once: a restarted sidecar container renews with the SVID it kept
      // in the pod's scratch volume. A service-account token can always be presented again.
      ...(settings.runtime.kind === "kubernetes" ? [] : ["--identity-dir=/tmp/identity"]),
      "--advertise-address=auto",
      ...list("app-port", pod.appPorts),
      ...list("http-ports", a.httpPorts),
      ...list("fast-path-ports", a.fastPathPorts),
      ...list("user-access-ports", a.userAccessPorts),
      ...(a.userAccessConfig === undefined
        ? []
        : [`--user-access-config=${USER_ACCESS_DIR}/${USER_ACCESS_FILE}`]),
      `--log-level=${settings.logLevel}`,
    ],
    env,
    readinessProbe: {
      exec: { command: [IMAGE_NODE, IMAGE_ENTRY, "ready", `--admin-port=${ADMIN_PORT}`] },
      periodSeconds: 5,
      timeoutSeconds: 3,
      failureThreshold: 3,
    },
    resources: settings.sidecarResources,
    volumeMounts: mounts,
    securityContext: {
      runAsUser: SIDECAR_UID,
      runAsGroup: SIDECAR_UID,
      runAsNonRoot: true,
      readOnlyRootFilesystem: true,
      allowPrivilegeEscalation: false,
      privileged: false,
      // The fast path drives NFQUEUE from the sidecar; nothing else needs a capability.
      capabilities: a.fastPathPorts.length > 0 ? { drop: ["ALL"], add: ["NET_ADMIN"] } : { drop: ["ALL"] },
    },
  };
}

export function sidecarVolumes(settings: InjectSettings, podName: string | undefined): Volume[] {
  const tmp: Volume = {
    name: scratchVolumeName(settings, podName),
    emptyDir: { medium: "Memory", sizeLimit: "16Mi" },
  };
  const rt = settings.runtime;
  if (rt.kind === "podman") {
    return [
      { name: VOLUMES.bundle, hostPath: { path: `${rt.hostDir}/bundle`, type: "Directory" } },
      { name: VOLUMES.token, hostPath: { path: `${rt.hostDir}/tokens/${podName}`, type: "Directory" } },
      tmp,
    ];
  }
  return [
    {
      name: VOLUMES.bundle,
      configMap: { name: rt.bundleConfigMap, items: [{ key: BUNDLE_FILE, path: BUNDLE_FILE }] },
    },
    {
      name: VOLUMES.token,
      projected: {
        sources: [
          {
            serviceAccountToken: {
              audience: rt.tokenAudience,
              expirationSeconds: rt.tokenExpirationSeconds,
              path: TOKEN_FILE,
            },
          },
        ],
      },
    },
    tmp,
  ];
}

/**
 * The provider settings of `sigil.io/user-access-config`, mounted into the sidecar alone: a Secret,
 * since beside `user-access.yaml` it holds the client secret and the session key; on podman the
 * host directory `<hostDir>/user-access/<name>`.
 */
export function userAccessVolumes(settings: InjectSettings, name: string | undefined): Volume[] {
  if (name === undefined) return [];
  const rt = settings.runtime;
  return rt.kind === "podman"
    ? [
        {
          name: VOLUMES.userAccess,
          hostPath: { path: `${rt.hostDir}/user-access/${name}`, type: "Directory" },
        },
      ]
    : [{ name: VOLUMES.userAccess, secret: { secretName: name } }];
}
