/**
 * What `sigil policy import-networkpolicy` says about its input: a refusal (the input is not a
 * NetworkPolicy it can read) or a finding (a part Sigil cannot express exactly, and what was done
 * instead). Both name the document and the field.
 */

/** The input is refused: not YAML, not a NetworkPolicy, a field of the wrong shape. */
export class NetworkPolicyError extends Error {
  constructor(
    /** e.g. `policies.yaml document 2 (NetworkPolicy shop/allow-web)`. */
    readonly document: string,
    /** Dotted path inside the document (`spec.ingress[0].ports[1].endPort`); empty for the whole document. */
    readonly field: string,
    readonly reason: string,
  ) {
    super(`${document}: ${field ? `${field}: ` : ""}${reason}`);
    this.name = "NetworkPolicyError";
  }
}

/**
 * - `approximated`: translated narrower than written (never wider): a rule, peer or port was left
 *   out, or a selector resolved against the namespaces known now. `--strict` refuses these.
 * - `note`: translated as Sigil means it, which a reader of the NetworkPolicy should know
 *   (an ipBlock matches only peers outside the mesh).
 */
export type FindingKind = "approximated" | "note";

export interface Finding {
  readonly kind: FindingKind;
  readonly document: string;
  readonly field: string;
  readonly message: string;
}

export const formatFinding = (f: Finding): string => `${f.document}: ${f.field}: ${f.kind}: ${f.message}`;
