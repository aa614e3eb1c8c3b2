import type { NetworkPolicyPort } from "kubernetes-types/networking/v1.js";

/**
 * A rule's `ports` as Sigil's: TCP port numbers. Sigil decides TCP connections only and knows no
 * port names, so UDP/SCTP entries and named ports are left out of the rule, which then allows less,
 * never more; a rule left with no port is left out entirely (its `ports` omitted would mean every
 * port).
 */

export interface PortLoss {
  /** Relative to the rule (`ports[1]`). */
  readonly field: string;
  readonly message: string;
}

export type RulePorts =
  /** No restriction: every TCP port. */
  | { readonly kind: "any"; readonly lost: readonly PortLoss[] }
  | { readonly kind: "listed"; readonly ports: number[]; readonly lost: readonly PortLoss[] }
  /** Nothing Sigil can name is left: the rule allows nothing Sigil decides. */
  | { readonly kind: "none"; readonly lost: readonly PortLoss[] };

const ALL_PORTS = 65535;

export function rulePorts(ports: readonly NetworkPolicyPort[] | undefined): RulePorts {
  if (ports === undefined || ports.length === 0) return { kind: "any", lost: [] };
  const lost: PortLoss[] = [];
  const listed = new Set<number>();
  let any = false;
  ports.forEach((p, i) => {
    const protocol = p.protocol ?? "TCP";
    const field = `ports[${i}]`;
    if (protocol !== "TCP") {
      lost.push({
        field,
        message: `${protocol}${p.port === undefined ? "" : ` port ${p.port}`} left out: Sigil decides TCP connections only (${protocol} traffic is not captured, so the NetworkPolicy stays the control for it)`,
      });
    } else if (typeof p.port === "string") {
      lost.push({
        field,
        message: `named port "${p.port}" left out: Sigil policy names ports by number (write the container port's number)`,
      });
    } else if (p.port === undefined) {
      any = true;
    } else {
      for (let n = p.port; n <= (p.endPort ?? p.port); n++) listed.add(n);
    }
  });
  if (any || listed.size === ALL_PORTS) return { kind: "any", lost };
  if (listed.size === 0) return { kind: "none", lost };
  return { kind: "listed", ports: [...listed].sort((a, b) => a - b), lost };
}
