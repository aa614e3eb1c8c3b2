import type { EventEmitter } from "node:events";
import * as grpc from "@grpc/grpc-js";
import { startGrpcServer, type RunningGrpcServer } from "../../controlplane/grpc-server.ts";
import { createSelfSignedServingCert, type ServingCert } from "../../controlplane/serving-cert.ts";
import { XdsClient, type XdsClientOptions } from "../../xds/client.ts";
import { defaultTypeRegistry, type TypeRegistry } from "../../xds/registry.ts";
import { AdsServer, type NodeAuthorizer } from "../../xds/server.ts";
import { SnapshotCache } from "../../xds/snapshot.ts";

/** A TLS gRPC server hosting ADS on an ephemeral loopback port, as the control plane runs it. */
export interface AdsFixture {
  readonly cert: ServingCert;
  readonly registry: TypeRegistry;
  readonly cache: SnapshotCache;
  readonly ads: AdsServer;
  grpc: RunningGrpcServer;
  readonly clients: XdsClient[];
  client(nodeId: string, protocol: "sotw" | "delta", extra?: Partial<XdsClientOptions>): XdsClient;
  /** Stops and starts the gRPC server on the same port (streams break; clients must reconnect). */
  restart(): Promise<void>;
  close(): Promise<void>;
}

export async function startAdsFixture(authorize?: NodeAuthorizer): Promise<AdsFixture> {
  const cert = await createSelfSignedServingCert(["localhost"]);
  const registry = defaultTypeRegistry();
  const cache = new SnapshotCache();
  const ads = new AdsServer({ cache, registry, authorize });
  const start = async (port: number) => {
    const server = await startGrpcServer({
      host: "127.0.0.1",
      port,
      tls: { keyPem: cert.keyPem, certPem: cert.certPem },
    });
    server.addService(ads.definition, ads.implementation);
    return server;
  };
  const fixture: AdsFixture = {
    cert,
    registry,
    cache,
    ads,
    grpc: await start(0),
    clients: [],
    client(nodeId, protocol, extra = {}) {
      const c = new XdsClient({
        target: `127.0.0.1:${fixture.grpc.port}`,
        credentials: grpc.credentials.createSsl(Buffer.from(cert.certPem)),
        channelOptions: { "grpc.ssl_target_name_override": "localhost" },
        node: { id: nodeId, locality: { zone: "test" } },
        protocol,
        registry,
        backoff: { initialMs: 20, maxMs: 200, multiplier: 2, jitter: 0.2 },
        ...extra,
      });
      fixture.clients.push(c);
      return c;
    },
    async restart() {
      const port = fixture.grpc.port;
      await fixture.grpc.close(0);
      fixture.grpc = await start(port);
    },
    async close() {
      for (const c of fixture.clients) c.close();
      await fixture.grpc.close(0);
    },
  };
  return fixture;
}

/** Resolves with the first `event` whose payload satisfies `match`; rejects after `timeoutMs`. */
export function nextEvent<T>(
  emitter: EventEmitter,
  event: string,
  match: (payload: T) => boolean = () => true,
  timeoutMs = 5_000,
): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      emitter.off(event, listener);
      reject(new Error(`timed out after ${timeoutMs} ms waiting for ${event}`));
    }, timeoutMs);
    const listener = (payload: T) => {
      if (!match(payload)) return;
      clearTimeout(timer);
      emitter.off(event, listener);
      resolve(payload);
    };
    emitter.on(event, listener);
  });
}
