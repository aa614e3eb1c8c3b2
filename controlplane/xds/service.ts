import { defaultTypeRegistry, type TypeRegistry } from "../../xds/registry.ts";
import { AdsServer, trustClaimedNodeId, type NodeAuthorizer } from "../../xds/server.ts";
import type { XdsWarnLog } from "../../xds/unserved.ts";
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
 * defaults to trusting the claimed node id; `log` takes the server's warnings (types a node asks for
 * that are not served). Register `ads.definition`/`ads.implementation` on the gRPC server.
 */
export function createXdsService(
  authorize: NodeAuthorizer = trustClaimedNodeId,
  log?: XdsWarnLog,
): XdsService {
  const registry = defaultTypeRegistry();
  const cache = new SnapshotCache();
  const publisher = new XdsPublisher(cache, registry);
  const ads = new AdsServer({ cache, registry, authorize, ...(log ? { log } : {}) });
  // A connecting node gets a snapshot (the shared one unless it has resources of its own) before
  // its first request is answered; one that disconnected for good leaves nothing behind.
  const streams = new Map<string, number>();
  ads.on("stream-open", ({ key }) => {
    streams.set(key, (streams.get(key) ?? 0) + 1);
    publisher.ensureNode(key);
  });
  ads.on("stream-close", ({ key }) => {
    const left = (streams.get(key) ?? 1) - 1;
    if (left > 0) {
      streams.set(key, left);
      return;
    }
    streams.delete(key);
    publisher.releaseNode(key);
  });
  return { registry, cache, publisher, ads };
}
