import type { Labels } from "../../core/labels.ts";

/**
 * Each mesh workload's labels as the control plane's peer directory lists them now, by SPIFFE ID,
 * including workloads that serve no port (the directory lists every issued, unrevoked workload).
 * The data path decides a peer under these and its certificate's labels (`authz/peer-labels.ts`).
 */
export class DirectoryLabels {
  private static readonly none = new DirectoryLabels(new Map());

  private constructor(private readonly bySpiffeId: ReadonlyMap<string, Labels>) {}

  static empty(): DirectoryLabels {
    return DirectoryLabels.none;
  }

  /** One label set per SPIFFE ID; a SPIFFE ID given twice with different labels is left out. */
  static of(entries: Iterable<readonly [string, Labels]>): DirectoryLabels {
    const map = new Map<string, Labels>();
    const conflicting = new Set<string>();
    for (const [spiffeId, labels] of entries) {
      const known = map.get(spiffeId);
      if (known !== undefined && !sameLabels(known, labels)) conflicting.add(spiffeId);
      else map.set(spiffeId, Object.freeze({ ...labels }));
    }
    for (const spiffeId of conflicting) map.delete(spiffeId);
    return new DirectoryLabels(map);
  }

  get size(): number {
    return this.bySpiffeId.size;
  }

  labelsOf(spiffeId: string): Labels | undefined {
    return this.bySpiffeId.get(spiffeId);
  }

  entries(): [string, Labels][] {
    return [...this.bySpiffeId];
  }

  /** Whether both list the same SPIFFE IDs with the same labels. */
  equals(other: DirectoryLabels): boolean {
    if (other.size !== this.size) return false;
    for (const [spiffeId, labels] of this.bySpiffeId) {
      const theirs = other.labelsOf(spiffeId);
      if (theirs === undefined || !sameLabels(labels, theirs)) return false;
    }
    return true;
  }
}

export function sameLabels(a: Labels, b: Labels): boolean {
  if (a === b) return true;
  const keys = Object.keys(a);
  if (keys.length !== Object.keys(b).length) return false;
  return keys.every((k) => Object.hasOwn(b, k) && a[k] === b[k]);
}
