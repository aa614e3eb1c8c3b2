import type { PodTemplateSpec } from "kubernetes-types/core/v1.js";
import { INJECT_KEY } from "./constants.ts";
import { InjectError, PodProblem } from "./errors.ts";
import { injectPodTemplate } from "./mutate.ts";
import type { InjectSettings } from "./settings.ts";

type Json = Record<string, unknown>;

/** Where each workload kind keeps its pod template, as a path from the document's root. */
const TEMPLATE_PATH: Readonly<Record<string, readonly string[] | null>> = {
  Pod: null,
  Deployment: ["spec", "template"],
  StatefulSet: ["spec", "template"],
  DaemonSet: ["spec", "template"],
  ReplicaSet: ["spec", "template"],
  Job: ["spec", "template"],
  CronJob: ["spec", "jobTemplate", "spec", "template"],
};

/** Kinds that carry no pod and pass through unchanged (a manifest bundles them with its workloads). */
const PASS_THROUGH = new Set([
  "Service",
  "ConfigMap",
  "Secret",
  "ServiceAccount",
  "Namespace",
  "Role",
  "RoleBinding",
  "ClusterRole",
  "ClusterRoleBinding",
  "NetworkPolicy",
  "Ingress",
  "PersistentVolumeClaim",
  "PodDisruptionBudget",
  "HorizontalPodAutoscaler",
  "MutatingWebhookConfiguration",
  "ValidatingWebhookConfiguration",
]);

export const WORKLOAD_KINDS: readonly string[] = Object.keys(TEMPLATE_PATH);

const isObject = (v: unknown): v is Json => typeof v === "object" && v !== null && !Array.isArray(v);

/** `Deployment shop/web` — how errors name a document's object. */
export function describeObject(doc: Json): string {
  const meta = isObject(doc.metadata) ? doc.metadata : {};
  const name =
    typeof meta.name === "string"
      ? meta.name
      : typeof meta.generateName === "string"
        ? `${meta.generateName}*`
        : "(unnamed)";
  const ns = typeof meta.namespace === "string" ? `${meta.namespace}/` : "";
  return `${String(doc.kind)} ${ns}${name}`;
}

function get(root: Json, path: readonly string[]): unknown {
  let at: unknown = root;
  for (const key of path) at = isObject(at) ? at[key] : undefined;
  return at;
}

function set(root: Json, path: readonly string[], value: unknown): Json {
  const [head, ...rest] = path;
  if (head === undefined) return value as Json;
  const child = isObject(root[head]) ? (root[head] as Json) : {};
  return { ...root, [head]: set(child, rest, value) };
}

export type Outcome = "injected" | "skipped" | "passed-through";

/**
 * Injects one Kubernetes object (already parsed). `where` names the document in errors. Returns the
 * new object and what was done: a workload annotated `sigil.io/inject: disabled` is skipped, a kind
 * that has no pods passes through, any other kind is refused.
 */
export function injectObject(
  doc: unknown,
  settings: InjectSettings,
  where: string,
): { object: unknown; outcome: Outcome } {
  if (!isObject(doc))
    throw new InjectError(where, "", "not a Kubernetes object (a mapping with apiVersion and kind)");
  if (typeof doc.kind !== "string" || doc.kind === "") throw new InjectError(where, "kind", "missing");
  if (typeof doc.apiVersion !== "string" || doc.apiVersion === "")
    throw new InjectError(where, "apiVersion", "missing");
  const label = `${where} (${describeObject(doc)})`;
  if (PASS_THROUGH.has(doc.kind)) return { object: doc, outcome: "passed-through" };
  const path = TEMPLATE_PATH[doc.kind];
  if (path === undefined)
    throw new InjectError(
      label,
      "kind",
      `unknown kind "${doc.kind}": Sigil injects ${WORKLOAD_KINDS.join(", ")} and passes ${[...PASS_THROUGH].join(", ")} through`,
    );
  const prefix = path === null ? "" : `${path.join(".")}.`;
  const template = path === null ? { metadata: doc.metadata, spec: doc.spec } : get(doc, path);
  if (!isObject(template) || !isObject(template.spec))
    throw new InjectError(label, `${prefix}spec`, "missing: no pod spec to inject into");
  if (template.metadata !== undefined && !isObject(template.metadata))
    throw new InjectError(label, `${prefix}metadata`, "not a mapping");
  const annotations = isObject(template.metadata) ? template.metadata.annotations : undefined;
  if (annotations !== undefined && !isObject(annotations))
    throw new InjectError(label, `${prefix}metadata.annotations`, "not a mapping of strings");
  if (isObject(annotations) && annotations[INJECT_KEY] === "disabled")
    return { object: doc, outcome: "skipped" };
  const meta = isObject(doc.metadata) ? doc.metadata : {};
  let injected: PodTemplateSpec;
  try {
    injected = injectPodTemplate(template as PodTemplateSpec, settings, {
      podName: path === null && typeof meta.name === "string" ? meta.name : undefined,
    });
  } catch (err) {
    if (err instanceof PodProblem) throw new InjectError(label, `${prefix}${err.field}`, err.reason);
    throw err;
  }
  const object =
    path === null ? { ...doc, metadata: injected.metadata, spec: injected.spec } : set(doc, path, injected);
  return { object, outcome: "injected" };
}
