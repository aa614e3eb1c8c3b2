import net from "node:net";
import type { AddressInfo, Server, Socket } from "node:net";
import type http from "node:http";
import type { Logger } from "pino";
import type { WorkloadIdentity } from "../core/identity.ts";
import { nativeAvailable, originalDestinationOf, releaseFreeMemory } from "../native/index.ts";
import { configDumpBase, startAdmin } from "./admin/admin.ts";
import { Authorizer } from "./authz/authorize.ts";
import { EgressNameResolver } from "./egress/dns.ts";
import type { SidecarConfig, SidecarConfigInput } from "./config.ts";
import { parseSidecarConfig } from "./config.ts";
import { Http1Proxy } from "./http/http1/proxy.ts";
import { Http2Proxy } from "./http/http2/proxy.ts";
import { InboundHandler } from "./proxy/inbound.ts";
import { SidecarMetrics } from "./admin/metrics.ts";
import { AccessLog } from "./authz/access-log.ts";
import { MeshTls } from "./tls/mtls.ts";
import { OutboundHandler } from "./proxy/outbound.ts";
import type { CredentialSource, FlowSink, PeerDirectory, PolicySource } from "./inputs/sources.ts";
import { ConnectionTracker } from "./proxy/tracker.ts";
import { MemoryReturn } from "./proxy/memory-return.ts";
import { retireConnectionsOnIdentityChange } from "./upstream/identity-change.ts";
import { OpenConnections } from "./authz/open-connections.ts";
import { Upstreams } from "./upstream/upstreams.ts";
import type { UserAccessGate } from "./user-access/gate.ts";
import { createLogger } from "../core/logger.ts";

/**
 * Composes the data path: listeners, mTLS, proxies, authorization, admin. The inputs that change at
 * run time (credentials, policy, peer directory) are read through their sources on every connection
 * or request, so the caller updates them in place (xDS, rotation) and never restarts the sidecar.
 */

export interface StartSidecarOptions {
  readonly config: SidecarConfigInput;
  readonly credentials: CredentialSource;
  readonly policy: PolicySource;
  readonly peers: PeerDirectory;
  readonly flows: FlowSink;
  /** Captured mode: where a redirected connection was going. Default: SO_ORIGINAL_DST via native/. */
  readonly originalDestination?: (socket: Socket) => { address: string; port: number };
  readonly logger?: Logger;
  /** Further readiness condition for `/ready` (e.g. "the first policy set has arrived"); default always. */
  readonly ready?: () => boolean;
  /** False: no admin server (a worker process's data path; its primary serves admin). Default true. */
  readonly serveAdmin?: boolean;
  /** The clock user-access sessions expire by (milliseconds); default the system's. */
  readonly sessionClock?: () => number;
}

export interface Sidecar {
  readonly config: SidecarConfig;
  /** The capture listener (captured mode), else null. */
  readonly outbound: AddressInfo | null;
  /** Explicit mode: one listener per configured target, in configuration order. */
  readonly outboundTargets: readonly AddressInfo[];
  readonly inbound: AddressInfo;
  readonly admin: AddressInfo;
  readonly metrics: SidecarMetrics;
  identity(): WorkloadIdentity;
  /** Stops accepting, lets connections in flight finish (up to drainTimeoutMs), then closes. */
  drain(): Promise<{ clean: boolean }>;
  /** Closes everything at once. */
  close(): Promise<void>;
}

/** The data path without an admin server (`serveAdmin: false`). */
export type DataPath = Omit<Sidecar, "admin">;

function listen(server: Server, host: string, port: number, backlog: number): Promise<AddressInfo> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen({ port, host, backlog }, () => {
      server.off("error", reject);
      resolve(server.address() as AddressInfo);
    });
  });
}

function closeServer(server: Server | http.Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

export function startSidecar(options: StartSidecarOptions & { serveAdmin: false }): Promise<DataPath>;
export function startSidecar(options: StartSidecarOptions): Promise<Sidecar>;
export async function startSidecar(options: StartSidecarOptions): Promise<Sidecar | DataPath> {
  const config = parseSidecarConfig(options.config);
  const log = options.logger ?? createLogger("sigil-sidecar", { level: config.logLevel });
  // Read first: a missing key or secret file stops start-up before anything listens.
  const userAccessConfig = config.inbound.userAccess;
  // The gate and its OpenID Connect and JOSE libraries load only when user access is configured:
  // they are several MB of live heap that every other sidecar would carry for nothing.
  let userAccess: UserAccessGate | null = null;
  if (userAccessConfig !== undefined) {
    const gate = await import("./user-access/gate.ts");
    userAccess = await gate.UserAccessGate.create(userAccessConfig, {
      log,
      ...(options.sessionClock === undefined ? {} : { now: options.sessionClock }),
    });
  }
  const metrics = new SidecarMetrics({ maxLabelSets: config.admin.maxLabelSets });
  const meshTls = new MeshTls(options.credentials, options.policy, metrics, log);
  const self = (): WorkloadIdentity => meshTls.identity.identity;
  const authorizer = new Authorizer(
    self,
    options.policy,
    options.flows,
    metrics,
    log,
    new EgressNameResolver(config.egressDns),
    new AccessLog(config.accessLog, log),
  );
  const upstreams = new Upstreams(meshTls, {
    connectTimeoutMs: config.connectTimeoutMs,
    keepAliveTimeoutMs: config.keepAliveTimeoutMs,
    directIdleTimeoutMs: config.directIdleTimeoutMs,
    meshConnectionsPerDestination: config.meshConnectionsPerDestination,
    directConnectionsPerDestination: config.directConnectionsPerDestination,
    directIdleConnectionsPerDestination: config.directIdleConnectionsPerDestination,
  });
  metrics.watchUpstreamRoutes(() => upstreams.routes);
  const http1 = new Http1Proxy(
    authorizer,
    upstreams,
    {
      maxHeaderBytes: config.maxHeaderBytes,
      headersTimeoutMs: config.headersTimeoutMs,
      bodiesOnGetHead: config.bodiesOnGetHead,
      keepAliveTimeoutMs: config.keepAliveTimeoutMs,
    },
    log,
  );
  const http2 = new Http2Proxy(
    authorizer,
    upstreams,
    {
      maxHeaderListBytes: config.maxHeaderBytes,
      bodiesOnGetHead: config.bodiesOnGetHead,
      engine: config.http2Engine,
    },
    log,
  );
  // Without the native addon (or glibc) the memory a burst used simply stays with the process.
  const memoryReturn: MemoryReturn | undefined = nativeAvailable()
    ? new MemoryReturn((): number => tracker.size, releaseFreeMemory)
    : undefined;
  const tracker: ConnectionTracker = new ConnectionTracker(metrics, memoryReturn);
  if (memoryReturn) metrics.watchMemoryReturns(memoryReturn.stats);
  const stopRetiring = retireConnectionsOnIdentityChange(
    options.credentials,
    meshTls,
    options.policy,
    upstreams,
    log,
  );
  const openConnections = new OpenConnections(log);
  // A new revocation list also cuts pooled connections to servers whose certificate it now refuses.
  const redecideOpen = (): void => {
    openConnections.redecide();
    upstreams.dropRevoked(options.policy.current().revocations);
  };
  options.policy.on?.("change", redecideOpen);
  const stopWatching = (): void => {
    memoryReturn?.stop();
    stopRetiring();
    options.policy.off?.("change", redecideOpen);
  };
  const originalDestination = options.originalDestination ?? originalDestinationOf;
  let draining = false;

  const outboundHandler = new OutboundHandler({
    authorizer,
    peers: options.peers,
    upstreams,
    http1,
    http2,
    tracker,
    openConnections,
    detectTimeoutMs: config.detectTimeoutMs,
    log,
  });
  const servers: Server[] = [];
  const serve = (handler: (socket: Socket) => void): Server => {
    const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (socket) => {
      if (draining) {
        socket.destroy();
        return;
      }
      handler(socket);
    });
    servers.push(server);
    return server;
  };
  const reservedPorts = new Set<number>([config.admin.port, config.inbound.port, config.outbound.port]);

  const inboundHandler = new InboundHandler({
    authorizer,
    tls: meshTls,
    policy: options.policy,
    selfLabels: () => self().labels,
    upstreams,
    http1,
    http2,
    tracker,
    openConnections,
    appHost: config.inbound.appHost,
    plaintextPort:
      config.mode === "captured"
        ? (socket) => {
            try {
              return originalDestination(socket).port;
            } catch (err) {
              // Peer sidecars dial this listener itself, so their mesh hops have no plaintext port to
              // read; such connections may only continue as mTLS, and a plaintext one is refused.
              log.debug({ err: (err as Error).message }, "no plaintext port for an inbound connection");
              return null;
            }
          }
        : () => config.inbound.plaintextAppPort ?? null,
    reservedPorts,
    // A user-access port is HTTP only: an opaque tunnel to it would pass no sign-in.
    httpPorts: new Set([...config.inbound.httpPorts, ...(userAccessConfig?.ports ?? [])]),
    detectTimeoutMs: config.detectTimeoutMs,
    handshakeTimeoutMs: config.handshakeTimeoutMs,
    forwardClientCert: config.forwardClientCert,
    userAccess,
    log,
  });

  try {
    const inbound = await listen(
      serve((socket) => void inboundHandler.handle(socket)),
      config.inbound.host,
      config.inbound.port,
      config.listenBacklog,
    );
    reservedPorts.add(inbound.port);
    let outbound: AddressInfo | null = null;
    const outboundTargets: AddressInfo[] = [];
    if (config.mode === "captured") {
      outbound = await listen(
        serve((socket) => {
          let dest;
          try {
            dest = originalDestination(socket);
          } catch (err) {
            log.warn({ err: (err as Error).message }, "no original destination for an outbound connection");
            socket.resetAndDestroy();
            return;
          }
          void outboundHandler.handle(socket, { host: dest.address, port: dest.port });
        }),
        config.outbound.host,
        config.outbound.port,
        config.listenBacklog,
      );
      reservedPorts.add(outbound.port);
    } else {
      for (const target of config.outbound.targets) {
        const address = await listen(
          serve((socket) => void outboundHandler.handle(socket, target.destination, target.protocol)),
          target.host,
          target.port,
          config.listenBacklog,
        );
        outboundTargets.push(address);
      }
    }
    const admin =
      options.serveAdmin === false
        ? null
        : await startAdmin(
            config.admin.host,
            config.admin.port,
            metrics,
            {
              ready: () => !draining && (options.ready?.() ?? true),
              configDump: () => ({
                ...configDumpBase(config, meshTls.identity.identity, options.policy.current()),
                listeners: { inbound, outbound, outboundTargets },
                connections: tracker.size,
                draining,
              }),
            },
            log,
          );
    if (admin) reservedPorts.add(admin.address.port);
    log.info(
      {
        spiffeId: self().spiffeId,
        mode: config.mode,
        inbound,
        outbound,
        outboundTargets,
        admin: admin?.address ?? null,
      },
      "sidecar started",
    );

    const stopListening = async (): Promise<void> => {
      await Promise.all(servers.map((s) => closeServer(s)));
    };
    const sidecar: DataPath & { admin?: AddressInfo } = {
      config,
      outbound,
      outboundTargets,
      inbound,
      ...(admin ? { admin: admin.address } : {}),
      metrics,
      identity: self,
      async drain() {
        draining = true;
        log.info({ connections: tracker.size, timeoutMs: config.drainTimeoutMs }, "draining");
        const stopped = stopListening();
        http1.drain();
        http2.drain();
        const clean = await tracker.idle(config.drainTimeoutMs);
        if (!clean) tracker.destroyAll();
        await stopped;
        await upstreams.close();
        if (admin) await closeServer(admin.server);
        meshTls.close();
        stopWatching();
        log.info({ clean }, "drained");
        return { clean };
      },
      async close() {
        draining = true;
        const stopped = stopListening();
        tracker.destroyAll();
        upstreams.destroy();
        admin?.server.closeAllConnections();
        await Promise.all([stopped, admin ? closeServer(admin.server) : undefined]);
        meshTls.close();
        stopWatching();
      },
    };
    return sidecar;
  } catch (err) {
    for (const s of servers) s.close();
    meshTls.close();
    stopWatching();
    throw err;
  }
}

/** Drains the sidecar when the process is asked to stop, then lets it exit. */
export function drainOnSignal(
  sidecar: Sidecar,
  log: Logger,
  signals: readonly NodeJS.Signals[] = ["SIGTERM", "SIGINT"],
): void {
  const onSignal = (signal: NodeJS.Signals): void => {
    for (const s of signals) process.off(s, onSignal);
    log.info({ signal }, "stopping");
    sidecar.drain().then(
      ({ clean }) => {
        process.exitCode = clean ? 0 : 1;
      },
      (err: Error) => {
        log.error({ err }, "drain failed");
        process.exitCode = 1;
      },
    );
  };
  for (const s of signals) process.on(s, onSignal);
}
