import { readFile } from "node:fs/promises";
import type { Socket } from "node:net";
import type { Logger } from "pino";
import { registrationMetadata } from "../../core/registration.ts";
import { parseSpiffeId } from "../../core/identity.ts";
import { API_VERSION, compilePolicySet } from "../../core/policy/index.ts";
import type { CompiledPolicySet } from "../../core/policy/index.ts";
import type { WireProcessFacts } from "../../core/svid/wire.ts";
import { originalDestinationOf } from "../../native/index.ts";
import { FlowReporter } from "../flows/reporter.ts";
import { IdentityClient } from "../identity/identity-client.ts";
import { IdentityStore } from "../identity/identity-store.ts";
import { RotationManager } from "../identity/rotation.ts";
import type { BootstrapProof, WorkloadCredentials } from "../identity/rotation.ts";
import { collectProcessFacts, readMetadataFile } from "../identity/workload-facts.ts";
import { findWorkloadProcess } from "../identity/workload-process.ts";
import type { SidecarConfigInput } from "../config.ts";
import { startSidecar } from "../sidecar.ts";
import type { Sidecar } from "../sidecar.ts";
import type { PeerDirectory } from "../inputs/sources.ts";
import { PeerDirectoryHolder, PolicyHolder } from "../inputs/state.ts";
import type { SidecarWorkers } from "../worker-processes/primary.ts";
import {
  bootstrapChannelCredentials,
  controlPlaneIdentityCheck,
  SvidCertificateProvider,
  svidChannelCredentials,
} from "./control-plane-tls.ts";
import { bootstrapProofSource } from "./bootstrap-proof.ts";
import { keepIdentity, storedIdentity } from "./kept-identity.ts";
import { renewOnRefusedCertificate } from "./refused-certificate.ts";
import { controlPlaneTargets, unaryTargetFor, type AddressLookup } from "./control-plane-targets.ts";
import type { AgentFastPath } from "./fast-path.ts";
import type { DirectoryEntry } from "./peer-directory.ts";
import { FlowRelay } from "./flow-relay.ts";
import { guardOriginalDestination, localAddressTest } from "../proxy/loop-guard.ts";
import type { AgentOptions } from "./options.ts";
import { SidecarSubscriptions } from "./subscriptions.ts";
import { startAgentWorkloadApi } from "./workload-api.ts";
import type { WorkloadApi } from "../workload-api/server.ts";
import { createLogger } from "../../core/logger.ts";

/**
 * `sigil sidecar`: one process composing the sidecar's parts. Identity first (a key made here, a
 * join-token attestation, an SVID, rotation at half-life), then the xDS subscriptions over TLS with
 * that SVID (trust bundle, own policy set, peer directory, revocations), then the data path with
 * those live sources, with flow records streamed to the control plane. It becomes ready (stdout
 * line, admin `/ready`) only once it holds an SVID and a policy set and its listeners are up.
 * With `workers > 1` the data path runs in that many worker processes (sidecar/worker-processes) fed from
 * this one; everything else stays here.
 */

export class AgentError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "AgentError";
  }
}

export interface Agent {
  readonly spiffeId: string;
  readonly sidecar: Sidecar;
  readonly subscriptions: SidecarSubscriptions;
  /** The peer directory in force (what outbound connections are matched against). */
  readonly peers: PeerDirectory;
  readonly rotation: RotationManager;
  readonly flows: FlowReporter;
  /** The L4 fast path, when `--fast-path-ports` were given. */
  readonly fastPath: AgentFastPath | null;
  /** The SPIFFE Workload API, when `--workload-api-socket` was given. */
  readonly workloadApi: WorkloadApi | null;
  /** Lets connections in flight finish (up to the drain timeout), then stops everything. */
  drain(): Promise<{ clean: boolean }>;
  /** Stops everything at once. */
  close(): Promise<void>;
}

export interface AgentRuntime {
  readonly logger?: Logger;
  /** Captured mode: where a redirected connection was going (default SO_ORIGINAL_DST). */
  readonly originalDestination?: (socket: Socket) => { address: string; port: number };
  /** Gives up waiting for the first SVID and policy set after this long (default: wait for ever). */
  readonly startTimeoutMs?: number;
  /** Resolves control-plane names given in a list (default: the host's resolver). */
  readonly lookup?: AddressLookup;
  /**
   * Index in `--control-plane` of the replica the xDS stream opens to first (default: a random one,
   * which spreads sidecars over the replicas); failover then goes on in list order.
   */
  readonly firstControlPlane?: number;
}

function withTimeout<T>(promise: Promise<T>, ms: number | undefined, what: string): Promise<T> {
  if (ms === undefined) return promise;
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new AgentError(`${what}: no answer within ${ms} ms`)), ms);
    promise.then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      (err: unknown) => {
        clearTimeout(timer);
        reject(err instanceof Error ? err : new Error(String(err)));
      },
    );
  });
}

/**
 * How long an SVID request waits for the workload named by its attributes to be running: on a VM,
 * systemd starts the application after the sidecar, and restarts it after a crash.
 */
const WORKLOAD_WAIT_MS = 30_000;

/** The protected process's facts for one SVID request, by pid or by attributes; none when neither is set. */
async function processFactsOf(o: AgentOptions, log: Logger): Promise<{ process?: WireProcessFacts }> {
  if (o.workloadPid !== undefined) return { process: await collectProcessFacts(o.workloadPid) };
  if (o.workloadUid === undefined) return {};
  const attributes = { uid: o.workloadUid, ...(o.workloadExe !== undefined ? { exe: o.workloadExe } : {}) };
  const onWaiting = (what: string): void =>
    log.info({ waitMs: WORKLOAD_WAIT_MS }, `waiting for the workload's process (${what})`);
  return { process: await findWorkloadProcess(attributes, { waitMs: WORKLOAD_WAIT_MS, onWaiting }) };
}

/** Ingress is default-deny anyway; an empty egress section makes egress default-deny too. */
function denyAllPolicySet(): CompiledPolicySet {
  return compilePolicySet([
    {
      apiVersion: API_VERSION,
      kind: "AuthorizationPolicy",
      metadata: { name: "sigil.awaiting-policy" },
      spec: { selector: {}, egress: [] },
    },
  ]);
}

function sidecarConfig(o: AgentOptions): SidecarConfigInput {
  return {
    mode: o.mode,
    inbound: {
      host: o.inboundHost,
      port: o.inboundPort,
      appHost: "127.0.0.1",
      httpPorts: o.httpPorts,
      ...(o.plaintextAppPort !== undefined ? { plaintextAppPort: o.plaintextAppPort } : {}),
      ...(o.userAccess !== undefined ? { userAccess: o.userAccess } : {}),
    },
    outbound: { host: o.outboundHost, port: o.outboundPort, targets: o.outbound },
    admin: { host: o.adminHost, port: o.adminPort },
    drainTimeoutMs: o.drainTimeoutMs,
    logLevel: o.logLevel,
    accessLog: o.accessLog,
  };
}

export async function startAgent(o: AgentOptions, runtime: AgentRuntime = {}): Promise<Agent> {
  const log = runtime.logger ?? createLogger("sigil-sidecar", { level: o.logLevel });
  let caPem: string;
  try {
    caPem = await readFile(o.controlPlaneCa, "utf8");
  } catch (err) {
    throw new AgentError(
      `cannot read control plane CA bundle ${o.controlPlaneCa}: ${(err as Error).message}`,
    );
  }
  if (!caPem.includes("-----BEGIN CERTIFICATE-----"))
    throw new AgentError(`${o.controlPlaneCa} holds no PEM certificate`);
  let bootstrapProof: () => Promise<BootstrapProof>;
  try {
    bootstrapProof = await bootstrapProofSource(o);
  } catch (err) {
    throw new AgentError((err as Error).message);
  }
  const check = controlPlaneIdentityCheck(o.trustDomain);

  const controlPlanes = controlPlaneTargets(o.controlPlane);
  let unaryTarget: string;
  try {
    unaryTarget = await unaryTargetFor(controlPlanes, runtime.lookup);
  } catch (err) {
    throw new AgentError((err as Error).message);
  }
  const identityClient = new IdentityClient({
    address: unaryTarget,
    caPem,
    credentials: bootstrapChannelCredentials(caPem, check),
  });
  const store = o.identityDir !== undefined ? new IdentityStore(o.identityDir) : undefined;
  const resumeFrom = await storedIdentity(store, log);
  const rotation = new RotationManager({
    client: identityClient,
    trustDomain: o.trustDomain,
    bootstrapProof,
    ...(resumeFrom ? { resumeFrom } : {}),
    facts: async () => ({
      ...(await processFactsOf(o, log)),
      ...(o.metadataFile !== undefined ? { metadata: await readMetadataFile(o.metadataFile) } : {}),
    }),
    ...(o.metadataFile !== undefined ? { watchFile: o.metadataFile } : {}),
    ...(o.svidTtlSeconds !== undefined ? { ttlSeconds: o.svidTtlSeconds } : {}),
  });
  rotation.on("error", (err) => log.warn({ err: err.message }, "SVID renewal failed; retrying"));

  const provider = new SvidCertificateProvider(caPem);
  const cleanup: (() => void)[] = [() => identityClient.close(), () => rotation.stop()];
  const undo = (): void => {
    for (const c of cleanup.reverse()) c();
  };
  try {
    let creds: WorkloadCredentials;
    try {
      creds = await withTimeout(rotation.start(), runtime.startTimeoutMs, "SVID request");
    } catch (err) {
      throw new AgentError(`no SVID from ${o.controlPlane}: ${(err as Error).message}`);
    }
    const id = parseSpiffeId(creds.spiffeId);
    if (id?.trustDomain !== o.trustDomain)
      throw new AgentError(`issued SVID ${creds.spiffeId} is outside trust domain ${o.trustDomain}`);
    provider.update(creds);
    await keepIdentity(store, creds, log);
    rotation.on("rotated", (c) => {
      provider.update(c);
      void keepIdentity(store, c, log);
      log.info({ spiffeId: c.spiffeId, notAfter: c.notAfter.toISOString() }, "SVID rotated");
    });
    log.info({ spiffeId: creds.spiffeId, notAfter: creds.notAfter.toISOString() }, "SVID issued");

    // Until the control plane's policy set arrives, every direction is denied (fail closed).
    const policy = new PolicyHolder({ trustDomain: o.trustDomain, policies: denyAllPolicySet() });
    const peers = new PeerDirectoryHolder();
    let policyReceived = false;
    // With --fast-path-ports, not ready until the enforcers run, nor while they are down (their
    // handshakes fail closed).
    let fastPath: AgentFastPath | null = null;
    const ready = (): boolean =>
      policyReceived && (o.fastPathPorts.length === 0 || fastPath?.ready() === true);
    const relay = new FlowRelay();
    const ownPorts = new Set<number>();
    const isLocal = localAddressTest(o.advertiseAddress);
    // Worker processes read original destinations with SO_ORIGINAL_DST themselves.
    if (o.workers > 1 && runtime.originalDestination)
      throw new AgentError("a custom original-destination reader cannot reach worker processes");
    let workers: SidecarWorkers | null = null;
    // The workers' primary (node:cluster, the relay protocol) loads only when workers are asked for.
    const primary = o.workers > 1 ? await import("../worker-processes/primary.ts") : null;
    const sidecar =
      primary !== null
        ? (workers = await primary.startSidecarWorkers({
            workers: o.workers,
            config: sidecarConfig(o),
            credentials: rotation,
            policy,
            flows: relay,
            loopGuard: { advertised: o.advertiseAddress },
            ready,
            logger: log,
          }))
        : await startSidecar({
            config: sidecarConfig(o),
            credentials: rotation,
            policy,
            peers,
            flows: relay,
            originalDestination: guardOriginalDestination(
              runtime.originalDestination ?? originalDestinationOf,
              () => ownPorts,
              isLocal,
            ),
            ready,
            logger: log,
          });
    cleanup.push(() => void sidecar.close());
    for (const a of [sidecar.inbound, sidecar.admin, sidecar.outbound, ...sidecar.outboundTargets])
      if (a) ownPorts.add(a.port);

    const flows = new FlowReporter({
      target: unaryTarget,
      credentials: () => svidChannelCredentials(provider, check),
      registry: sidecar.metrics.registry,
      logger: log,
    });
    relay.attach(flows);
    flows.start();
    cleanup.push(() => void flows.close());

    // The registration carries the bound inbound port, so it is sent once the listeners are up.
    const subscriptions = new SidecarSubscriptions({
      target: controlPlanes,
      ...(runtime.firstControlPlane !== undefined ? { firstTarget: runtime.firstControlPlane } : {}),
      credentials: svidChannelCredentials(provider, check),
      node: {
        id: creds.spiffeId,
        cluster: o.workloadName,
        metadata: registrationMetadata({
          addresses: o.advertiseAddress,
          appPorts: o.appPort,
          // Only the ports this workload serves; on the others its enforcer just signs the SYNs it sends.
          fastPathPorts: o.fastPathPorts.filter((p) => o.appPort.includes(p)),
          inboundPort: sidecar.inbound.port,
        }),
        user_agent_name: "sigil-sidecar",
      },
      trustDomain: o.trustDomain,
      spiffeId: creds.spiffeId,
      workloadName: o.workloadName,
      policy,
      peers,
      setTrustBundle: (b) => rotation.setTrustBundle(b),
      ownLabels: () => rotation.current().labels,
      renewIdentity: () => {
        log.info("labels changed at the control plane: renewing the SVID");
        rotation.renewNow().catch(() => undefined);
      },
      peerInboundPort: o.peerInboundPort,
      log,
    });
    cleanup.push(() => subscriptions.close());
    let workloadApi: WorkloadApi | null;
    try {
      workloadApi = await startAgentWorkloadApi(o, {
        rotation,
        target: unaryTarget,
        caPem,
        provider,
        check,
        log,
      });
    } catch (err) {
      throw new AgentError(`workload API: ${(err as Error).message}`);
    }
    if (workloadApi) cleanup.push(() => void workloadApi?.close());
    const refusedCertificate = renewOnRefusedCertificate({
      rotation,
      xds: subscriptions.client,
      revocations: () => policy.current().revocations,
      log,
    });
    subscriptions.on("changed", refusedCertificate.check);
    cleanup.push(refusedCertificate.stop);
    let directory: readonly DirectoryEntry[] = [];
    subscriptions.on("peers", (entries) => {
      directory = entries;
    });
    if (workers) {
      const pool = workers;
      subscriptions.on("changed", () => pool.policyChanged());
      subscriptions.on("peers", (entries) => pool.setPeers(entries));
    }
    const firstPolicy = new Promise<void>((resolve) =>
      subscriptions.once("policy", () => {
        policyReceived = true;
        resolve();
      }),
    );
    subscriptions.start();
    log.info({ controlPlane: o.controlPlane }, "waiting for the policy set");
    await withTimeout(firstPolicy, runtime.startTimeoutMs, "first policy set");

    if (o.fastPathPorts.length > 0) {
      // Loaded only when asked for: the worker pool resolves its thread loader at import time.
      const { AgentFastPath } = await import("./fast-path.ts");
      fastPath = await AgentFastPath.start(
        {
          ports: o.fastPathPorts,
          failOpen: o.fastPathFailOpen,
          trustDomain: o.trustDomain,
          ...(o.captureConfig !== undefined ? { captureConfigFile: o.captureConfig } : {}),
          onFlow: (flow) => relay.report(flow),
          log,
        },
        {
          credentials: () => rotation.current(),
          policySet: () => subscriptions.current as NonNullable<typeof subscriptions.current>,
          snapshot: () => policy.current(),
          directory: () => directory.map(([where]) => where),
        },
      );
      const fp = fastPath;
      cleanup.push(() => void fp.stop());
      fp.exposeMetrics(sidecar.metrics.registry);
      const refresh = (): void => {
        fp.refresh().catch((err: Error) => log.error({ err: err.message }, "fast-path update failed"));
      };
      rotation.on("rotate", refresh);
      subscriptions.on("changed", refresh);
      const refreshRules = (): void => {
        fp.refreshRules().catch((err: Error) => log.error({ err: err.message }, "fast-path update failed"));
      };
      subscriptions.on("peers", refreshRules);
      // A policy set or directory applied while the fast path was starting was heard by no one yet.
      refresh();
    }

    let stopped = false;
    const stopControl = async (): Promise<void> => {
      refusedCertificate.stop();
      await workloadApi?.close();
      await fastPath?.stop();
      subscriptions.close();
      rotation.stop();
      identityClient.close();
      await flows.close();
    };
    return {
      spiffeId: creds.spiffeId,
      sidecar,
      subscriptions,
      peers,
      rotation,
      flows,
      fastPath,
      workloadApi,
      async drain() {
        if (stopped) return { clean: true };
        stopped = true;
        const result = await sidecar.drain();
        await stopControl();
        return result;
      },
      async close() {
        if (stopped) return;
        stopped = true;
        await sidecar.close();
        await stopControl();
      },
    };
  } catch (err) {
    undo();
    throw err;
  }
}
