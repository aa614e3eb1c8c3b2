import type { Labels } from "../../core/labels.ts";
import type { TypeRegistry } from "../../xds/registry.ts";
import { ResourceSet } from "../../xds/snapshot.ts";
import { WORKLOAD_IDENTITY } from "../../xds/type-urls.ts";
import { byCodeUnits } from "../../core/code-unit-order.ts";

/**
 * Each workload's own WorkloadIdentity resource (core/proto/sigil/v1/workload_identity.proto): the
 * labels its certificate should carry. A label change reaches the workload's sidecar through its own
 * resource, whether or not it serves a port (and so appears in peer directories). Encodings are kept
 * per workload and rebuilt only when its labels change, so a republish of a large mesh re-encodes
 * only what changed and hands the publisher the same set object for everything else.
 */
export class OwnIdentityResources {
  private sets = new Map<string, { readonly labels: string; readonly set: ResourceSet }>();

  constructor(private readonly registry: TypeRegistry) {}

  /** The resource set for this workload and labels; the same object while the labels stay the same. */
  setFor(spiffeId: string, labels: Labels): ResourceSet {
    const key = JSON.stringify(Object.entries(labels).sort(([a], [b]) => byCodeUnits(a, b)));
    const known = this.sets.get(spiffeId);
    if (known?.labels === key) return known.set;
    const resource = this.registry.encode(WORKLOAD_IDENTITY, { spiffe_id: spiffeId, labels: { ...labels } });
    const set = new ResourceSet(WORKLOAD_IDENTITY, [resource]);
    this.sets.set(spiffeId, { labels: key, set });
    return set;
  }

  /** Forgets workloads no longer published (revoked or gone). */
  retain(spiffeIds: ReadonlySet<string>): void {
    for (const id of this.sets.keys()) if (!spiffeIds.has(id)) this.sets.delete(id);
  }
}
