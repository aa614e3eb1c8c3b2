import { defaultTypeRegistry, type TypeRegistry } from "../../xds/registry.ts";
import { AdsServer, trustClaimedNodeId, type NodeAuthorizer } from "../../xds/server.ts";
import { SnapshotCache } from "../../xds/snapshot.ts";
import { XdsPublisher } from "./publisher.ts";

export interface XdsService {
  readonly registry: TypeRegistry;
  readonly cache: SnapshotCache;
  readonly publisher: XdsPublisher;
  readonly ads: AdsServer;
}

/**
 * The control plane's xDS side. `authorize` maps a stream's peer (its verified workload
 * certificate, once the identity layer requires one) to the node key it may be served; it
 * defaults to trusting the claimed node id. Register `ads.definition`/`ads.implementation` on the
 * gRPC server.
 */
export function createXdsService(authorize: NodeAuthorizer = trustClaimedNodeId): XdsService {
  const registry = defaultTypeRegistry();
  const cache = new SnapshotCache();
  const publisher = new XdsPublisher(cache, registry);
  const ads = new AdsServer({
    cache,
    registry,
    authorize: async (node, peer) => {
      const key = await authorize(node, peer);
      publisher.ensureNode(key);
      return key;
    },
  });
  return { registry, cache, publisher, ads };
}
