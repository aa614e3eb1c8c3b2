import type { TypeRegistry, XdsResource } from "../../xds/registry.ts";
import { ResourceSet, Snapshot, type SnapshotCache } from "../../xds/snapshot.ts";
import { CLUSTER, CLUSTER_LOAD_ASSIGNMENT, LISTENER, ROUTE_CONFIGURATION } from "../../xds/type-urls.ts";
import { envoyResourcesFor, type ServiceEndpoints } from "./envoy.ts";

/**
 * Turns what the control plane knows into per-node snapshots. Mesh-wide resources (trust bundles,
 * directory, revocations, service endpoints) are one shared set per type; node-specific sets (a
 * workload's policy) override them per node. A node without overrides is served the one shared
 * snapshot object, so ten thousand of them cost ten thousand map entries, not copies.
 */
export class XdsPublisher {
  private readonly shared = new Map<string, ResourceSet>();
  private readonly perNode = new Map<string, Map<string, ResourceSet>>();
  private readonly nodes = new Set<string>();
  private sharedSnapshot = Snapshot.fromSets([]);
  private batching = 0;
  private dirtyAll = false;
  private readonly dirty = new Set<string>();
  /** Snapshots built during one flush, by the node-specific sets they combine: nodes with the same sets share one. */
  private readonly built = new Map<string, Snapshot>();
  private readonly setIds = new WeakMap<ResourceSet, number>();
  private nextSetId = 0;

  constructor(
    readonly cache: SnapshotCache,
    readonly registry: TypeRegistry,
  ) {}

  /** Replaces the mesh-wide resources of one type. */
  setShared(typeUrl: string, resources: Iterable<XdsResource> | ResourceSet): void {
    this.shared.set(typeUrl, toSet(typeUrl, resources));
    this.sharedSnapshot = Snapshot.fromSets(this.shared.values());
    this.dirtyAll = true;
    this.flush();
  }

  /** Publishes Listener/RouteConfiguration/Cluster/ClusterLoadAssignment for exactly these services. */
  setServices(services: readonly ServiceEndpoints[]): void {
    const byType = new Map<string, XdsResource[]>([
      [LISTENER, []],
      [ROUTE_CONFIGURATION, []],
      [CLUSTER, []],
      [CLUSTER_LOAD_ASSIGNMENT, []],
    ]);
    for (const s of services)
      for (const r of envoyResourcesFor(this.registry, s)) byType.get(r.typeUrl)?.push(r);
    this.batch(() => {
      for (const [typeUrl, list] of byType) this.setShared(typeUrl, list);
    });
  }

  /** Gives one node its own resources of a type (pass a shared ResourceSet to let nodes share it). */
  setNodeResources(nodeKey: string, typeUrl: string, resources: Iterable<XdsResource> | ResourceSet): void {
    let sets = this.perNode.get(nodeKey);
    if (!sets) this.perNode.set(nodeKey, (sets = new Map()));
    sets.set(typeUrl, toSet(typeUrl, resources));
    this.nodes.add(nodeKey);
    this.dirty.add(nodeKey);
    this.flush();
  }

  /** Drops a node's own resources; it falls back to the shared ones. */
  clearNode(nodeKey: string): void {
    if (!this.perNode.delete(nodeKey)) return;
    this.dirty.add(nodeKey);
    this.flush();
  }

  /** Makes sure a node that just connected has a snapshot (call from the stream authorizer). */
  ensureNode(nodeKey: string): void {
    if (this.nodes.has(nodeKey)) return;
    this.nodes.add(nodeKey);
    this.dirty.add(nodeKey);
    this.flush();
  }

  /** Forgets a node that has no streams left and no resources of its own. */
  releaseNode(nodeKey: string): void {
    if (this.perNode.has(nodeKey) || !this.nodes.delete(nodeKey)) return;
    this.dirty.delete(nodeKey);
    this.cache.delete(nodeKey);
  }

  /** Applies several changes and republishes once, so no node sees a half-applied state. */
  batch(apply: () => void): void {
    this.batching++;
    try {
      apply();
    } finally {
      this.batching--;
      this.flush();
    }
  }

  private flush(): void {
    if (this.batching > 0) return;
    const keys = this.dirtyAll ? this.nodes : this.dirty;
    try {
      for (const key of keys) this.cache.set(key, this.snapshotFor(key));
    } finally {
      this.dirtyAll = false;
      this.dirty.clear();
      this.built.clear();
    }
  }

  private snapshotFor(nodeKey: string): Snapshot {
    const own = this.perNode.get(nodeKey);
    if (!own) return this.sharedSnapshot;
    let signature = "";
    for (const [t, s] of own) signature += `${t} ${this.idOf(s)} `;
    let snapshot = this.built.get(signature);
    if (!snapshot) {
      const sets = new Map(this.shared);
      for (const [t, s] of own) sets.set(t, s);
      snapshot = Snapshot.fromSets(sets.values());
      this.built.set(signature, snapshot);
    }
    return snapshot;
  }

  private idOf(set: ResourceSet): number {
    let id = this.setIds.get(set);
    if (id === undefined) this.setIds.set(set, (id = this.nextSetId++));
    return id;
  }
}

function toSet(typeUrl: string, resources: Iterable<XdsResource> | ResourceSet): ResourceSet {
  if (resources instanceof ResourceSet) {
    if (resources.typeUrl !== typeUrl) throw new Error(`a ${resources.typeUrl} set given as ${typeUrl}`);
    return resources;
  }
  return new ResourceSet(typeUrl, resources);
}
