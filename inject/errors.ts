/**
 * Every refusal of `sigil inject` and of the admission webhook names the document it is about, the
 * field within it, and why.
 */
export class InjectError extends Error {
  constructor(
    /** e.g. `document 2 (Deployment shop/web)`, or `AdmissionReview request` for the webhook. */
    readonly document: string,
    /** Dotted path inside the document (`spec.template.metadata.annotations["sigil.io/http-ports"]`). */
    readonly field: string,
    readonly reason: string,
  ) {
    super(`${document}: ${field ? `${field}: ` : ""}${reason}`);
    this.name = "InjectError";
  }
}

/** A problem found inside one pod template, before the caller knows which document it is in. */
export class PodProblem extends Error {
  constructor(
    /** Path relative to the pod template (`metadata.annotations[...]`, `spec.containers[0].ports`). */
    readonly field: string,
    readonly reason: string,
  ) {
    super(`${field}: ${reason}`);
    this.name = "PodProblem";
  }
}
