import type { Pod } from "kubernetes-types/core/v1.js";
import type { AttestedLabel } from "../../core/labels.ts";
import { labelKeyProblem, labelValueProblem } from "../../core/labels.ts";
import { reservedKeyProblem } from "../../core/label-provenance.ts";

/** What the pod attestor reads of a Pod object from the API server. */
export interface PodFacts {
  readonly namespace: string;
  readonly name: string;
  readonly uid: string;
  readonly serviceAccount: string;
  readonly labels: Readonly<Record<string, string>>;
  /** False once the pod has finished (phase Succeeded or Failed): it can hold no identity any more. */
  readonly live: boolean;
}

/** The pod object does not have the fields every pod has. */
export class PodShapeError extends Error {}

/** The facts of a Pod object, or a PodShapeError naming the missing field. */
export function podFacts(pod: Pod): PodFacts {
  const meta = pod.metadata;
  const need = (value: unknown, field: string): string => {
    if (typeof value !== "string" || value === "") throw new PodShapeError(`pod has no ${field}`);
    return value;
  };
  const labels: Record<string, string> = {};
  for (const [k, v] of Object.entries(meta?.labels ?? {})) {
    if (typeof v !== "string") throw new PodShapeError(`pod label "${k}" is not a string`);
    labels[k] = v;
  }
  const phase = pod.status?.phase;
  return {
    namespace: need(meta?.namespace, "metadata.namespace"),
    name: need(meta?.name, "metadata.name"),
    uid: need(meta?.uid, "metadata.uid"),
    // The API server defaults an unset service account to "default".
    serviceAccount: pod.spec?.serviceAccountName || "default",
    labels,
    live: phase !== "Succeeded" && phase !== "Failed",
  };
}

/** What the token claims about its pod. */
export interface TokenPodClaims {
  readonly namespace: string;
  readonly serviceAccount: string;
  readonly pod: string;
  readonly podUid: string;
}

/**
 * Why the pod the API server returned is not the one the token was issued to, or null. A token
 * outlives its pod: once a pod of the same name is created again, only the uid tells them apart.
 */
export function podMismatch(claims: TokenPodClaims, pod: PodFacts): string | null {
  const where = `pod ${claims.namespace}/${claims.pod}`;
  if (pod.uid !== claims.podUid)
    return `${where} has uid ${pod.uid}, the token was issued to uid ${claims.podUid} (a deleted pod's token)`;
  if (pod.serviceAccount !== claims.serviceAccount)
    return `${where} runs as service account ${pod.serviceAccount}, the token names ${claims.serviceAccount}`;
  if (!pod.live) return `${where} has finished`;
  return null;
}

/** Pod label keys the attestor never takes: `k8s.*` are the token's own claims (namespace, sa, pod). */
const ATTESTOR_KEY = /^k8s\./;

/**
 * The identity labels several pods sharing one service account (one SPIFFE ID) vouch for: each
 * key that every pod carries with the same value, under its own name, provenance `k8s-api`. Keys
 * Sigil cannot carry (too long, reserved, `k8s.*`) are returned as `skipped` with the reason.
 */
export function sharedPodLabels(pods: readonly PodFacts[]): {
  labels: AttestedLabel[];
  skipped: string[];
} {
  const [first, ...rest] = pods;
  if (!first) return { labels: [], skipped: [] };
  const labels: AttestedLabel[] = [];
  const skipped: string[] = [];
  for (const [key, value] of Object.entries(first.labels)) {
    if (!rest.every((p) => p.labels[key] === value)) continue;
    const problem = ATTESTOR_KEY.test(key)
      ? `label key "${key}" is reserved for the service-account token's claims`
      : (labelKeyProblem(key) ?? reservedKeyProblem(key) ?? labelValueProblem(key, value));
    if (problem) skipped.push(problem);
    else labels.push({ key, value, provenance: "k8s-api" });
  }
  labels.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  return { labels, skipped };
}
