import { X509Certificate } from "node:crypto";
import type { AddressInfo } from "node:net";
import type http from "node:http";
import type { Logger } from "pino";
import type { WorkloadIdentity } from "../../core/identity.ts";
import { verifySvid } from "../../core/svid/verify.ts";
import { configDumpBase, startAdmin } from "../admin/admin.ts";
import type { SidecarConfigInput } from "../config.ts";
import { parseSidecarConfig } from "../config.ts";
import { SidecarMetrics } from "../admin/metrics.ts";
import type { Sidecar } from "../sidecar.ts";
import type { CredentialSource, FlowSink, PolicySource, TlsCredentials } from "../inputs/sources.ts";
import { aggregateMetrics } from "./metrics.ts";
import { WorkerPool } from "./pool.ts";
import type { SchedulingPolicy, WorkerStatus } from "./pool.ts";
import { credentialsToWire, policyToWire } from "./relay-protocol.ts";
import type { ListenerAddress, WirePeers } from "./relay-protocol.ts";
import { createLogger } from "../../core/logger.ts";

/**
 * A sidecar whose data path runs in N worker processes sharing the listening sockets, while this
 * (primary) process keeps what talks to the control plane. The caller hands it the same sources
 * `startSidecar` reads and tells it when policy or peers changed (credentials announce their own
 * rotations); each change goes to every worker. The primary serves the admin endpoints: `/ready`
 * (listening workers, nothing draining, the caller's condition), `/stats/prometheus` (every
 * worker's metrics summed, plus decisions per worker) and `/config_dump` (with the workers).
 */

export interface StartSidecarWorkersOptions {
  readonly workers: number;
  readonly config: SidecarConfigInput;
  readonly credentials: CredentialSource;
  readonly policy: PolicySource;
  readonly flows: FlowSink;
  /** The peer directory to start with (later ones through `setPeers`). */
  readonly peers?: WirePeers;
  /** Captured mode: the workload's advertised addresses, for the loop guard on original destinations. */
  readonly loopGuard?: { readonly advertised: readonly string[] };
  readonly ready?: () => boolean;
  readonly logger?: Logger;
  /** Default "rr" (see sidecar/worker-processes/README.md for the measurement behind it). */
  readonly scheduling?: SchedulingPolicy;
}

export interface SidecarWorkers extends Sidecar {
  /** Sends the policy source's current snapshot to every worker (after a policy set or revocation list applied). */
  policyChanged(): void;
  /** Replaces the peer directory in every worker. */
  setPeers(peers: WirePeers): void;
  workers(): WorkerStatus[];
}

function chainDer(pem: string): Buffer[] {
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  return blocks.map((block) => new X509Certificate(block).raw);
}

/** The workload's identity from its SVID, verified as the workers will (fail closed before forking). */
function ownIdentity(creds: TlsCredentials): WorkloadIdentity {
  return verifySvid(chainDer(creds.certChainPem), { bundle: creds.bundle, purpose: "client" }).identity;
}

const address = (a: ListenerAddress): AddressInfo => ({ ...a });

function closeServer(server: http.Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

export async function startSidecarWorkers(options: StartSidecarWorkersOptions): Promise<SidecarWorkers> {
  const config = parseSidecarConfig(options.config);
  const log = options.logger ?? createLogger("sigil-sidecar", { level: config.logLevel });
  const metrics = new SidecarMetrics({ maxLabelSets: config.admin.maxLabelSets });
  let identity = ownIdentity(options.credentials.current());
  let peers: WirePeers = options.peers ?? [];
  let draining = false;

  // Admin first: its port is one of the sidecar's own that the workers' loop guard refuses.
  let pool: WorkerPool | null = null;
  let listeners: Awaited<ReturnType<WorkerPool["start"]>> | undefined;
  const admin = await startAdmin(
    config.admin.host,
    config.admin.port,
    {
      registry: {
        contentType: metrics.registry.contentType,
        metrics: async () => {
          const own = await metrics.registry.getMetricsAsJSON();
          return aggregateMetrics(own, (await pool?.stats()) ?? []).metrics();
        },
      },
    },
    {
      ready: () => !draining && (pool?.serving ?? 0) > 0 && (options.ready?.() ?? true),
      configDump: () => ({
        ...configDumpBase(config, identity, options.policy.current()),
        listeners: listeners ?? null,
        pid: process.pid,
        workers: pool?.status() ?? [],
        draining,
      }),
    },
    log,
  );
  pool = new WorkerPool({
    count: options.workers,
    init: () => ({
      config: options.config,
      logLevel: log.level,
      loopGuard:
        config.mode === "captured"
          ? { advertised: options.loopGuard?.advertised ?? [], extraPorts: [admin.address.port] }
          : null,
      credentials: credentialsToWire(options.credentials.current()),
      policy: policyToWire(options.policy.current()),
      peers,
    }),
    flows: options.flows,
    log,
    scheduling: options.scheduling ?? "rr",
    drainDeadlineMs: config.drainTimeoutMs + 5_000,
  });
  const workers = pool;
  const onRotate = (): void => {
    const creds = options.credentials.current();
    try {
      identity = ownIdentity(creds);
    } catch (err) {
      log.error(
        { err: (err as Error).message },
        "rotated credentials are not a valid SVID; workers keep theirs",
      );
      return;
    }
    workers.broadcast({ t: "credentials", credentials: credentialsToWire(creds) });
  };
  options.credentials.on("rotate", onRotate);

  try {
    listeners = await workers.start();
  } catch (err) {
    options.credentials.off("rotate", onRotate);
    admin.server.closeAllConnections();
    await closeServer(admin.server);
    throw err;
  }
  log.info(
    {
      spiffeId: identity.spiffeId,
      mode: config.mode,
      workers: options.workers,
      inbound: listeners.inbound,
      outbound: listeners.outbound,
      outboundTargets: listeners.outboundTargets,
      admin: admin.address,
    },
    "sidecar started",
  );

  let stopped = false;
  const stop = (): boolean => {
    if (stopped) return false;
    stopped = true;
    draining = true;
    options.credentials.off("rotate", onRotate);
    return true;
  };
  return {
    config,
    inbound: address(listeners.inbound),
    outbound: listeners.outbound ? address(listeners.outbound) : null,
    outboundTargets: listeners.outboundTargets.map(address),
    admin: admin.address,
    metrics,
    identity: () => identity,
    policyChanged() {
      workers.broadcast({ t: "policy", policy: policyToWire(options.policy.current()) });
    },
    setPeers(next) {
      peers = next;
      workers.broadcast({ t: "peers", peers });
    },
    workers: () => workers.status(),
    async drain() {
      if (!stop()) return { clean: true };
      log.info({ workers: workers.serving, timeoutMs: config.drainTimeoutMs }, "draining");
      const clean = await workers.drain();
      await closeServer(admin.server);
      log.info({ clean }, "drained");
      return { clean };
    },
    async close() {
      if (!stop()) return;
      await workers.close();
      admin.server.closeAllConnections();
      await closeServer(admin.server);
    },
  };
}
