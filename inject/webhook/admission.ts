import jsonPatch from "fast-json-patch";
import { z } from "zod";
import { INJECT_KEY } from "../constants.ts";
import { InjectError } from "../errors.ts";
import type { InjectSettings } from "../settings.ts";
import { injectObject } from "../workloads.ts";

/**
 * One `admission.k8s.io/v1` AdmissionReview: a Pod being created in, a JSON Patch (RFC 6902) that
 * injects it out. Every answer is a well-formed review; a pod that asked for Sigil and cannot be
 * injected is refused (`allowed: false` with the reason) rather than started unprotected.
 */

export const ADMISSION_API_VERSION = "admission.k8s.io/v1";

const reviewSchema = z.object({
  apiVersion: z.literal(ADMISSION_API_VERSION),
  kind: z.literal("AdmissionReview"),
  request: z.object({
    uid: z.string().min(1),
    kind: z.object({ group: z.string(), version: z.string(), kind: z.string() }),
    resource: z.object({ group: z.string(), version: z.string(), resource: z.string() }),
    subResource: z.string().optional(),
    namespace: z.string().optional(),
    name: z.string().optional(),
    operation: z.string(),
    object: z.unknown(),
    dryRun: z.boolean().optional(),
  }),
});

export type AdmissionRequest = z.infer<typeof reviewSchema>["request"];

export interface AdmissionResponse {
  readonly uid: string;
  readonly allowed: boolean;
  readonly patchType?: "JSONPatch";
  /** Base64 of the JSON Patch document. */
  readonly patch?: string;
  readonly status?: { readonly code: number; readonly reason?: string; readonly message: string };
  readonly warnings?: readonly string[];
}

export interface AdmissionReviewResponse {
  readonly apiVersion: typeof ADMISSION_API_VERSION;
  readonly kind: "AdmissionReview";
  readonly response: AdmissionResponse;
}

/** A body that is not an AdmissionReview at all: there is no uid to answer, so HTTP 400 says why. */
export class NotAnAdmissionReview extends Error {
  constructor(reason: string) {
    super(`not an ${ADMISSION_API_VERSION} AdmissionReview: ${reason}`);
    this.name = "NotAnAdmissionReview";
  }
}

export function parseAdmissionReview(body: unknown): AdmissionRequest {
  const r = reviewSchema.safeParse(body);
  if (!r.success) {
    const issue = r.error.issues[0];
    throw new NotAnAdmissionReview(`${issue?.path.join(".") || "(root)"}: ${issue?.message}`);
  }
  return r.data.request;
}

const review = (response: AdmissionResponse): AdmissionReviewResponse => ({
  apiVersion: ADMISSION_API_VERSION,
  kind: "AdmissionReview",
  response,
});

const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === "object" && v !== null && !Array.isArray(v);

/** The pod itself opted out (label or annotation `sigil.io/inject: disabled`). */
function optedOut(pod: Record<string, unknown>): boolean {
  const meta = isObject(pod.metadata) ? pod.metadata : {};
  const label = isObject(meta.labels) ? meta.labels[INJECT_KEY] : undefined;
  const annotation = isObject(meta.annotations) ? meta.annotations[INJECT_KEY] : undefined;
  return label === "disabled" || annotation === "disabled";
}

/**
 * Decides one admission request. The API server calls only for pods the webhook configuration's
 * selectors opted in (namespace or pod label `sigil.io/inject=enabled`); a pod that opts out itself
 * is admitted unchanged, and anything but a Pod CREATE is admitted unchanged too.
 */
export function admit(request: AdmissionRequest, settings: InjectSettings): AdmissionReviewResponse {
  const uid = request.uid;
  const isPodCreate =
    request.kind.group === "" &&
    request.kind.kind === "Pod" &&
    request.resource.resource === "pods" &&
    !request.subResource &&
    request.operation === "CREATE";
  if (!isPodCreate) return review({ uid, allowed: true });
  const pod = request.object;
  if (!isObject(pod))
    return review({
      uid,
      allowed: false,
      status: { code: 400, reason: "BadRequest", message: "request.object: not a Pod" },
    });
  if (optedOut(pod)) return review({ uid, allowed: true });
  const where = `pod ${request.namespace ?? "(no namespace)"}/${podName(pod, request)}`;
  let injected: unknown;
  try {
    ({ object: injected } = injectObject(pod, settings, where));
  } catch (err) {
    if (!(err instanceof InjectError)) throw err;
    return review({
      uid,
      allowed: false,
      status: { code: 400, reason: "BadRequest", message: `sigil: refusing to admit ${err.message}` },
    });
  }
  const operations = jsonPatch.compare(pod, injected as object);
  if (operations.length === 0) return review({ uid, allowed: true });
  return review({
    uid,
    allowed: true,
    patchType: "JSONPatch",
    patch: Buffer.from(JSON.stringify(operations)).toString("base64"),
  });
}

function podName(pod: Record<string, unknown>, request: AdmissionRequest): string {
  const meta = isObject(pod.metadata) ? pod.metadata : {};
  if (typeof meta.name === "string" && meta.name) return meta.name;
  if (request.name) return request.name;
  return typeof meta.generateName === "string" ? `${meta.generateName}*` : "(unnamed)";
}
