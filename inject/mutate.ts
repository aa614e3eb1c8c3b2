import type { Container, PodSpec, PodTemplateSpec } from "kubernetes-types/core/v1.js";
import { annotationField, PORT_LIST_KEYS, readAnnotations } from "./annotations.ts";
import {
  APP_PORTS_ANNOTATION,
  INBOUND_PORT,
  INIT_CONTAINER,
  INJECTED_ANNOTATION,
  PODMAN_INIT_ANNOTATION,
  SIDECAR_CONTAINER,
  SIDECAR_PORTS,
  SIDECAR_UID,
} from "./constants.ts";
import {
  initContainer,
  isSigilVolume,
  sidecarContainer,
  sidecarVolumes,
  userAccessVolumes,
} from "./containers.ts";
import { PodProblem } from "./errors.ts";
import { SIGIL_VERSION, type InjectSettings } from "./settings.ts";

const OWN_CONTAINERS = new Set([INIT_CONTAINER, SIDECAR_CONTAINER]);

const PORT_ROLE: Record<number, string> = {
  [INBOUND_PORT]: "the sidecar's inbound listener",
  15001: "the sidecar's outbound listener",
  15000: "the sidecar's admin listener",
};

/**
 * The restart policy a podman pod runs under. Podman before 4.6 gives init containers the pod's
 * policy, so under `Always` (Kubernetes' default) it restarts `sigil-init` every time it exits:
 * `kube play` waits out a 20 s timeout per pod, and capture is reinstalled every second or two for
 * the pod's whole life. `OnFailure` restarts a container that fails, the sidecar included, and
 * leaves a finished init container alone; `Never` and `OnFailure` are kept as asked.
 */
function podmanRestartPolicy(asked: string | undefined): string {
  return asked === undefined || asked === "Always" ? "OnFailure" : asked;
}

/** Whether an earlier injection's parts are present (so they are replaced, not refused). */
function injectedBefore(template: PodTemplateSpec): boolean {
  return template.metadata?.annotations?.[INJECTED_ANNOTATION] !== undefined;
}

/** Refuses a pod whose own containers, ports, uid or volumes collide with what the injection adds. */
function checkCollisions(template: PodTemplateSpec, appContainers: readonly Container[]): void {
  const spec: PodSpec = template.spec ?? { containers: [] };
  if (spec.hostNetwork)
    throw new PodProblem(
      "spec.hostNetwork",
      "a host-network pod shares the node's network namespace: capture would redirect the node's traffic",
    );
  if (spec.securityContext?.runAsUser === SIDECAR_UID)
    throw new PodProblem(
      "spec.securityContext.runAsUser",
      `uid ${SIDECAR_UID} is the sidecar's: capture exempts it, so the application's traffic would bypass the mesh`,
    );
  const fresh = !injectedBefore(template);
  for (const [kind, list] of [
    ["initContainers", spec.initContainers ?? []],
    ["containers", spec.containers ?? []],
  ] as const) {
    list.forEach((c, i) => {
      if (fresh && OWN_CONTAINERS.has(c.name))
        throw new PodProblem(`spec.${kind}[${i}].name`, `"${c.name}" is the name of Sigil's own container`);
    });
  }
  if (fresh)
    (spec.volumes ?? []).forEach((v, i) => {
      if (isSigilVolume(v.name))
        throw new PodProblem(`spec.volumes[${i}].name`, `"${v.name}" is the name of a Sigil volume`);
    });
  (spec.containers ?? []).forEach((c, i) => {
    if (!appContainers.includes(c)) return;
    if (c.securityContext?.runAsUser === SIDECAR_UID)
      throw new PodProblem(
        `spec.containers[${i}].securityContext.runAsUser`,
        `uid ${SIDECAR_UID} is the sidecar's: capture exempts it, so this container's traffic would bypass the mesh`,
      );
    (c.ports ?? []).forEach((p, j) => {
      if (SIDECAR_PORTS.includes(p.containerPort))
        throw new PodProblem(
          `spec.containers[${i}].ports[${j}].containerPort`,
          `port ${p.containerPort} is ${PORT_ROLE[p.containerPort]}`,
        );
    });
  });
}

/** TCP ports the application containers declare (and an earlier podman injection kept): the sidecar protects these inbound. */
function appPortsOf(containers: readonly Container[], kept: readonly number[]): number[] {
  const ports = new Set<number>(kept);
  for (const c of containers)
    for (const p of c.ports ?? []) if ((p.protocol ?? "TCP") === "TCP") ports.add(p.containerPort);
  return [...ports].sort((a, b) => a - b);
}

export interface TemplateContext {
  /** Set for a bare Pod; templates leave it to the downward API. */
  readonly podName: string | undefined;
}

/**
 * Returns the pod template with Sigil's init container, sidecar, volumes and annotations. Parts of an
 * earlier injection are removed first, so injecting twice gives what injecting once gives. Throws
 * `PodProblem` naming the field at fault.
 */
export function injectPodTemplate(
  template: PodTemplateSpec,
  settings: InjectSettings,
  context: TemplateContext,
): PodTemplateSpec {
  const annotations = readAnnotations(template.metadata?.annotations);
  const spec = template.spec;
  if (!spec || !Array.isArray(spec.containers) || spec.containers.length === 0)
    throw new PodProblem("spec.containers", "a pod needs at least one container");
  spec.containers.forEach((c, i) => {
    if (typeof c?.name !== "string" || c.name === "")
      throw new PodProblem(`spec.containers[${i}].name`, "missing");
  });
  const appContainers = spec.containers.filter((c) => !OWN_CONTAINERS.has(c.name));
  checkCollisions(template, appContainers);
  if (settings.runtime.kind === "podman" && context.podName === undefined)
    throw new PodProblem(
      "metadata.name",
      "outside Kubernetes each pod needs its own one-time join token: inject named Pods, not templates",
    );
  const appPorts = appPortsOf(appContainers, annotations.appPorts);
  // A user-access port the pod does not serve would never be protected, whatever the user thought.
  for (const p of annotations.userAccessPorts)
    if (!appPorts.includes(p))
      throw new PodProblem(
        annotationField(PORT_LIST_KEYS.userAccessPorts),
        `port ${p} is not a TCP port the application containers declare (${appPorts.join(", ") || "none"})`,
      );
  const facts = { podName: context.podName, appPorts, annotations };
  const podman = settings.runtime.kind === "podman";
  const podmanAnnotations: Record<string, string> = podman
    ? { [PODMAN_INIT_ANNOTATION]: "always", [APP_PORTS_ANNOTATION]: appPorts.join(",") }
    : {};
  // Podman 4 publishes every declared containerPort on the host: the ports move to the annotation.
  const containers = podman ? appContainers.map(({ ports: _ports, ...c }) => c) : appContainers;
  return {
    ...template,
    metadata: {
      ...template.metadata,
      annotations: {
        ...template.metadata?.annotations,
        ...podmanAnnotations,
        [INJECTED_ANNOTATION]: SIGIL_VERSION,
      },
    },
    spec: {
      ...spec,
      ...(podman ? { restartPolicy: podmanRestartPolicy(spec.restartPolicy) } : {}),
      initContainers: [
        initContainer(settings, facts),
        ...(spec.initContainers ?? []).filter((c) => !OWN_CONTAINERS.has(c.name)),
      ],
      containers: [sidecarContainer(settings, facts), ...containers],
      volumes: [
        ...(spec.volumes ?? []).filter((v) => !isSigilVolume(v.name)),
        ...sidecarVolumes(settings, context.podName),
        ...userAccessVolumes(settings, annotations.userAccessConfig),
      ],
    },
  };
}
