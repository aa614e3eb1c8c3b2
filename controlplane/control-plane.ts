import { createServer, type Server } from "node:http";
import { join, resolve } from "node:path";
import type { Logger } from "pino";
import { Router, sendJson } from "./http/router.ts";
import { startGrpcServer, type RunningGrpcServer } from "./grpc-server.ts";
import { loadOrCreateServingCert } from "./serving-cert.ts";
import { registerXdsRoutes } from "./xds/http.ts";
import { createXdsService, type XdsService } from "./xds/service.ts";
import type { NodeAuthorizer } from "../xds/server.ts";

export interface ControlPlaneConfig {
  readonly dataDir: string;
  readonly grpc: { readonly host: string; readonly port: number };
  /** Loopback plaintext xDS listener for proxyless gRPC clients; omitted = none. */
  readonly xdsPlaintext: { readonly host: string; readonly port: number } | undefined;
  readonly http: { readonly host: string; readonly port: number };
  readonly serverNames: readonly string[];
  readonly log: Logger;
  /**
   * Decides which node a gRPC peer may be served as (see xds/server.ts NodeAuthorizer). The
   * identity layer supplies one that checks the peer's workload certificate; until then the
   * claimed node id is trusted.
   */
  readonly authorizeNode?: NodeAuthorizer;
}

export interface ControlPlane {
  readonly dataDir: string;
  readonly grpc: RunningGrpcServer;
  readonly router: Router;
  readonly httpPort: number;
  /** Publish resources here (`xds.publisher`); the ADS service is already registered on `grpc`. */
  readonly xds: XdsService;
  close(): Promise<void>;
}

/** Starts the control plane's listeners; features register their gRPC services and HTTP routes on them. */
export async function startControlPlane(config: ControlPlaneConfig): Promise<ControlPlane> {
  const dataDir = resolve(config.dataDir);
  const cert = await loadOrCreateServingCert(join(dataDir, "tls"), config.serverNames);
  const grpc = await startGrpcServer({
    host: config.grpc.host,
    port: config.grpc.port,
    tls: { keyPem: cert.keyPem, certPem: cert.certPem },
    plaintext: config.xdsPlaintext,
  });
  const xds = createXdsService(config.authorizeNode);
  grpc.addService(xds.ads.definition, xds.ads.implementation);
  config.log.info(
    { port: grpc.port, plaintextPort: grpc.plaintextPort },
    "gRPC listening (TLS), ADS registered",
  );

  const router = new Router();
  router.add("GET", "/healthz", (_req, res) => sendJson(res, 200, { status: "ok" }));
  registerXdsRoutes(router, xds);
  const http = createServer((req, res) => void router.handle(req, res));
  const httpPort = await listen(http, config.http.host, config.http.port);
  config.log.info({ port: httpPort }, "HTTP API listening");

  return {
    dataDir,
    grpc,
    router,
    httpPort,
    xds,
    close: async () => {
      await Promise.all([grpc.close(), closeHttp(http)]);
    },
  };
}

function listen(server: Server, host: string, port: number): Promise<number> {
  return new Promise((resolvePort, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      const addr = server.address();
      resolvePort(typeof addr === "object" && addr ? addr.port : port);
    });
  });
}

function closeHttp(server: Server): Promise<void> {
  return new Promise((done) => {
    server.close(() => done());
    server.closeAllConnections();
  });
}
