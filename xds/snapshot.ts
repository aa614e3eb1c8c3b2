import { createHash } from "node:crypto";
import type { XdsResource } from "./registry.ts";

/**
 * The resources of one type in one snapshot. Immutable, so many snapshots (and all the streams
 * that serve them) share one instance and its encoded form.
 */
export class ResourceSet {
  readonly items: ReadonlyMap<string, XdsResource>;
  /** Hash over names and versions: a node that holds this version holds exactly these resources. */
  readonly version: string;
  private body: Buffer | undefined;

  constructor(
    readonly typeUrl: string,
    resources: Iterable<XdsResource>,
  ) {
    const items = new Map<string, XdsResource>();
    for (const r of resources) {
      if (r.typeUrl !== typeUrl)
        throw new Error(`resource ${r.name} of type ${r.typeUrl} placed in a ${typeUrl} set`);
      if (items.has(r.name)) throw new Error(`duplicate ${typeUrl} resource ${r.name}`);
      items.set(r.name, r);
    }
    this.items = items;
    this.version = versionOf([...items.values()]);
  }

  /** Every resource as the `resources` fields of a DiscoveryResponse, encoded once. */
  get sotwBody(): Buffer {
    if (!this.body) this.body = Buffer.concat([...this.items.values()].map((r) => r.sotwEntry));
    return this.body;
  }
}

/** Version of an arbitrary subset, as a named subscription sees it. */
export function versionOf(resources: readonly XdsResource[]): string {
  const sorted = [...resources].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const hash = createHash("sha256");
  for (const r of sorted) hash.update(r.name).update("\0").update(r.version).update("\0");
  return hash.digest("base64url").slice(0, 22);
}

/** What one node (or group of nodes) should hold: a resource set per type. Immutable. */
export class Snapshot {
  private static readonly emptySets = new Map<string, ResourceSet>();

  private constructor(readonly sets: ReadonlyMap<string, ResourceSet>) {}

  static of(resources: Iterable<XdsResource>): Snapshot {
    const byType = new Map<string, XdsResource[]>();
    for (const r of resources) {
      const list = byType.get(r.typeUrl);
      if (list) list.push(r);
      else byType.set(r.typeUrl, [r]);
    }
    return new Snapshot(new Map([...byType].map(([t, list]) => [t, new ResourceSet(t, list)])));
  }

  /** Assembles a snapshot from sets that other snapshots may share. */
  static fromSets(sets: Iterable<ResourceSet>): Snapshot {
    const map = new Map<string, ResourceSet>();
    for (const set of sets) {
      if (map.has(set.typeUrl)) throw new Error(`two resource sets for ${set.typeUrl}`);
      map.set(set.typeUrl, set);
    }
    return new Snapshot(map);
  }

  /** A copy with the set of `set.typeUrl` replaced. */
  withSet(set: ResourceSet): Snapshot {
    const map = new Map(this.sets);
    map.set(set.typeUrl, set);
    return new Snapshot(map);
  }

  set(typeUrl: string): ResourceSet {
    let set = this.sets.get(typeUrl);
    if (!set) {
      set = Snapshot.emptySets.get(typeUrl);
      if (!set) Snapshot.emptySets.set(typeUrl, (set = new ResourceSet(typeUrl, [])));
    }
    return set;
  }
}

export type SnapshotListener = (snapshot: Snapshot) => void;

/**
 * Snapshots keyed by node key (by default the node id): each sidecar is served only its own
 * subset. Setting a key notifies the streams of the nodes with that key.
 */
export class SnapshotCache {
  private readonly snapshots = new Map<string, Snapshot>();
  private readonly watchers = new Map<string, Set<SnapshotListener>>();

  get(key: string): Snapshot | undefined {
    return this.snapshots.get(key);
  }

  keys(): IterableIterator<string> {
    return this.snapshots.keys();
  }

  set(key: string, snapshot: Snapshot): void {
    if (this.snapshots.get(key) === snapshot) return;
    this.snapshots.set(key, snapshot);
    const watchers = this.watchers.get(key);
    if (watchers) for (const w of watchers) w(snapshot);
  }

  /** Forgets a node: its streams are told it now holds nothing. */
  delete(key: string): void {
    if (!this.snapshots.delete(key)) return;
    const watchers = this.watchers.get(key);
    if (watchers) for (const w of watchers) w(EMPTY);
  }

  watch(key: string, listener: SnapshotListener): () => void {
    let set = this.watchers.get(key);
    if (!set) this.watchers.set(key, (set = new Set()));
    set.add(listener);
    return () => {
      const current = this.watchers.get(key);
      if (!current) return;
      current.delete(listener);
      if (current.size === 0) this.watchers.delete(key);
    };
  }

  /** Number of streams watching, per key count (for metrics and tests). */
  watcherCount(): number {
    let n = 0;
    for (const s of this.watchers.values()) n += s.size;
    return n;
  }
}

export const EMPTY = Snapshot.of([]);
