import type { EventEmitter } from "node:events";
import * as grpc from "@grpc/grpc-js";
import { startGrpcServer, type RunningGrpcServer } from "../../controlplane/grpc-server.ts";
import { createSelfSignedServingCert, type ServingCert } from "../support/serving-cert.ts";
import { XdsClient, type XdsClientOptions } from "../../xds/client.ts";
import { defaultTypeRegistry, type TypeRegistry } from "../../xds/registry.ts";
import { AdsServer, type AdsServerOptions, type NodeAuthorizer } from "../../xds/server.ts";
import { SnapshotCache } from "../../xds/snapshot.ts";
import { adsServiceDefinition, type DeltaResponse, type SotwResponse } from "../../xds/wire.ts";

/** A TLS gRPC server hosting ADS on an ephemeral loopback port, as the control plane runs it. */
export interface AdsFixture {
  readonly cert: ServingCert;
  readonly registry: TypeRegistry;
  readonly cache: SnapshotCache;
  readonly ads: AdsServer;
  grpc: RunningGrpcServer;
  readonly clients: XdsClient[];
  /** The server side of every ADS call, in the order they were opened (what grpc-js buffers for each). */
  readonly calls: grpc.ServerDuplexStream<unknown, Buffer>[];
  client(nodeId: string, protocol: "sotw" | "delta", extra?: Partial<XdsClientOptions>): XdsClient;
  /** Stops and starts the gRPC server on the same port (streams break; clients must reconnect). */
  restart(): Promise<void>;
  close(): Promise<void>;
}

export async function startAdsFixture(
  authorize?: NodeAuthorizer,
  options: Pick<AdsServerOptions, "sendTimeoutMs" | "log"> = {},
): Promise<AdsFixture> {
  const cert = await createSelfSignedServingCert(["localhost"]);
  const registry = defaultTypeRegistry();
  const cache = new SnapshotCache();
  const ads = new AdsServer({ cache, registry, authorize, ...options });
  const start = async (port: number) => {
    const server = await startGrpcServer({
      host: "127.0.0.1",
      port,
      tls: { keyPem: cert.keyPem, certPem: cert.certPem },
    });
    const recorded = (method: string) => {
      const serve = ads.implementation[method] as grpc.handleBidiStreamingCall<unknown, Buffer>;
      return (call: grpc.ServerDuplexStream<unknown, Buffer>) => {
        fixture.calls.push(call);
        serve(call);
      };
    };
    server.addService(ads.definition, {
      StreamAggregatedResources: recorded("StreamAggregatedResources"),
      DeltaAggregatedResources: recorded("DeltaAggregatedResources"),
    });
    return server;
  };
  const fixture: AdsFixture = {
    cert,
    registry,
    cache,
    ads,
    grpc: await start(0),
    clients: [],
    calls: [],
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

/** An ADS stream on its own connection, for requests no well-behaved client would send. */
export interface BareAdsStream<R> {
  write(req: object): void;
  /** The next response not taken yet; rejects if none arrives within `timeoutMs`. */
  next(timeoutMs?: number): Promise<R>;
  /** How the stream ended; rejects if it is still open `statusTimeoutMs` after it was opened. */
  readonly status: Promise<grpc.StatusObject>;
  /**
   * Stops reading responses: once the client's buffers are full, HTTP/2 flow control holds the
   * server's writes back, as with a peer that does not read its stream.
   */
  pause(): void;
  resume(): void;
  close(): void;
}

/** A bare ADS stream (to `port`, by default the fixture's) whose responses are taken one by one, in order. */
export function openBareStream<R extends SotwResponse | DeltaResponse>(
  fx: Pick<AdsFixture, "cert" | "grpc">,
  protocol: "sotw" | "delta",
  { port = fx.grpc.port, statusTimeoutMs = 10_000 }: { port?: number; statusTimeoutMs?: number } = {},
): BareAdsStream<R> {
  const client = new grpc.Client(
    `127.0.0.1:${port}`,
    grpc.credentials.createSsl(Buffer.from(fx.cert.certPem)),
    { "grpc.ssl_target_name_override": "localhost" },
  );
  const def =
    adsServiceDefinition[protocol === "sotw" ? "StreamAggregatedResources" : "DeltaAggregatedResources"];
  if (!def) throw new Error("no ADS method");
  const call = client.makeBidiStreamRequest(
    def.path,
    def.requestSerialize as (v: object) => Buffer,
    def.responseDeserialize as (b: Buffer) => R,
  );
  call.on("error", () => undefined);
  const arrived: R[] = [];
  let waiter: ((r: R) => void) | undefined;
  call.on("data", (r: R) => {
    if (waiter) {
      const w = waiter;
      waiter = undefined;
      w(r);
    } else arrived.push(r);
  });
  const status = new Promise<grpc.StatusObject>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`the stream did not end within ${statusTimeoutMs} ms`)),
      statusTimeoutMs,
    );
    timer.unref();
    call.on("status", (st: grpc.StatusObject) => {
      clearTimeout(timer);
      resolve(st);
    });
  });
  status.catch(() => undefined);
  return {
    write: (req) => call.write(req),
    next(timeoutMs = 5_000) {
      const ready = arrived.shift();
      if (ready) return Promise.resolve(ready);
      return new Promise<R>((resolve, reject) => {
        const timer = setTimeout(() => {
          waiter = undefined;
          reject(new Error(`no response within ${timeoutMs} ms`));
        }, timeoutMs);
        waiter = (r) => {
          clearTimeout(timer);
          resolve(r);
        };
      });
    },
    status,
    pause: () => call.pause(),
    resume: () => call.resume(),
    close() {
      call.cancel();
      client.close();
    },
  };
}
