import { rename, writeFile } from "node:fs/promises";
import type { Server } from "node:http";
import type { PeerCertificate } from "node:tls";
import { isIP } from "node:net";
import { join, resolve } from "node:path";
import type { Logger } from "pino";
import { compilePolicySet } from "../core/policy/index.ts";
import { SIGIL_VERSION } from "../core/version.ts";
import type { CompiledPolicySet, PolicyDocument } from "../core/policy/index.ts";
import { bundleRootsPem } from "../core/svid/bundle.ts";
import type { NodeAuthorizer } from "../xds/server.ts";
import type { ImportedCa } from "./ca/authority.ts";
import { ensurePrivateDir } from "./ca/secret-files.ts";
import type { KubernetesAttestorConfig } from "./attestation/kubernetes.ts";
import { FlowStore } from "./flows/store.ts";
import { flowServiceHandlers } from "./flows/service.ts";
import { FlowServiceDefinition } from "../core/flow-wire.ts";
import { callPeer, startGrpcServer, type GrpcTlsOptions, type RunningGrpcServer } from "./grpc-server.ts";
import { ADMIN_TOKEN_FILE, loadAdminToken } from "./http/admin-token.ts";
import { HttpAuth, registerSessionRoutes } from "./http/auth.ts";
import { SignInLimit } from "./http/sign-in-limit.ts";
import { createApiServer } from "./http/api-server.ts";
import { Router, sendJson } from "./http/router.ts";
import { IdentityServiceDefinition, identityServiceHandlers } from "./identity/grpc-service.ts";
import { registerIdentityRoutes } from "./identity/http-routes.ts";
import { jwtSvidServiceHandlers } from "./identity/jwt-svid-service.ts";
import { openIdentityPlane, type IdentityPlane } from "./identity/plane.ts";
import { MeshPublisher, type PolicySource } from "./mesh/mesh.ts";
import type { AddressClaims } from "./mesh/address-ownership.ts";
import { registerMeshRoutes } from "./mesh/http-routes.ts";
import { verifyPeerWorkload } from "./mesh/node-auth.ts";
import { PolicyStore } from "./policy-store/store.ts";
import { registerPolicyFileRoutes } from "./policy-store/routes.ts";
import { directoryWriter, type PolicyWriter } from "./policy-store/writer.ts";
import { openReplicatedState, type ReplicatedState, type ReplicationConfig } from "./store/replicated.ts";
import type { EnforcementMode } from "../core/policy/index.ts";
import { ModeStore } from "./visibility/mode.ts";
import { createControlPlaneMetrics, type ControlPlaneMetrics } from "./metrics/metrics.ts";
import { countSignings } from "./metrics/count-signings.ts";
import { registerVisibilityRoutes } from "./visibility/routes.ts";
import { ReplicaFlows } from "./visibility/replica-flows.ts";
import { advertisedApi, peerFetch } from "./http/peer-api.ts";
import { registerXdsRoutes } from "./xds/http.ts";
import { createXdsService, type XdsService } from "./xds/service.ts";

export interface ControlPlaneConfig {
  readonly dataDir: string;
  /** Used when the CA is created; an existing CA must be of the same trust domain. Default sigil.local. */
  readonly trustDomain?: string;
  /** Directory of policy YAML, watched; omitted = no policies (everything denied in enforce mode). */
  readonly policyDir?: string;
  /** Mesh-wide enforcement mode. Given, it replaces the stored mesh default; omitted keeps it (enforce at first). */
  readonly mode?: EnforcementMode;
  readonly grpc: { readonly host: string; readonly port: number };
  /** Loopback plaintext xDS listener for proxyless gRPC clients; omitted = none. */
  readonly xdsPlaintext: { readonly host: string; readonly port: number } | undefined;
  /**
   * The HTTP API and UI. `tokenFile` holds the admin token callers must present; omitted, the
   * control plane keeps one in `<dataDir>/http-token`, creating it on first start.
   */
  readonly http: {
    readonly host: string;
    readonly port: number;
    readonly tokenFile?: string;
    /**
     * TLS for the API and UI: "sigil" serves a certificate from Sigil's CA (the one the gRPC
     * listener presents, renewed with it), `{ certFile, keyFile }` the operator's own, "off" plain
     * HTTP. Default: "sigil" off loopback, "off" on loopback.
     */
    readonly tls?: "sigil" | "off" | { readonly certFile: string; readonly keyFile: string };
    /** Sign-in attempts allowed per source address and minute (default 10). */
    readonly signInAttemptsPerMinute?: number;
    /** With etcd: the URL the other replicas reach this API at (default: the listen address). */
    readonly advertise?: string;
  };
  /** DNS names in the serving certificate (127.0.0.1, ::1 and an IP --grpc-host are added). */
  readonly serverNames: readonly string[];
  readonly log: Logger;
  readonly kubernetes?: KubernetesAttestorConfig;
  /** A CA (or intermediate) to use instead of generating a root, on first start only. */
  readonly importedCa?: ImportedCa;
  /**
   * Replaces the ADS node authorizer. The default serves a TLS stream only as the workload its
   * client certificate proves, and a plaintext (loopback) stream only the mesh-wide resources.
   */
  readonly authorizeNode?: NodeAuthorizer;
  /**
   * Whether a workload address registered without evidence (neither on its join token nor the
   * address its stream comes from) is published: "evidence" (default) never; "first-claim" to its
   * first claimant, for sidecars that reach the control plane through NAT.
   */
  readonly addressClaims?: AddressClaims;
  /**
   * Keep the configuration state (CA, registry, tokens, modes, policies, registrations) in etcd,
   * shared with other replicas, instead of the data directory. Flows stay in the data directory.
   */
  readonly replication?: ReplicationConfig;
}

export interface ControlPlane {
  readonly dataDir: string;
  readonly trustDomain: string;
  readonly grpc: RunningGrpcServer;
  readonly router: Router;
  readonly httpPort: number;
  /** Whether the HTTP API is served over TLS (https). */
  readonly httpTls: boolean;
  /** The file holding the HTTP API's admin token, and the token (for callers in this process). */
  readonly httpAuth: { readonly tokenFile: string; readonly token: string };
  /** PEM file of the roots a sidecar trusts to reach the control plane (the CA bundle). */
  readonly bundlePath: string;
  /** Publish resources here (`xds.publisher`); the ADS service is already registered on `grpc`. */
  readonly xds: XdsService;
  readonly identity: IdentityPlane;
  readonly flows: FlowStore;
  readonly modes: ModeStore;
  readonly policies: PolicyStore | undefined;
  readonly mesh: MeshPublisher;
  readonly metrics: ControlPlaneMetrics;
  /** The etcd-backed state when running as a replica. */
  readonly replication: ReplicatedState | undefined;
  close(): Promise<void>;
}

/** Where sidecars find the roots they trust the control plane by (see `bundlePath`). */
export const BUNDLE_FILE = "bundle.pem";

/**
 * Starts the control plane: the CA and identity issuance, the TLS gRPC endpoint (ADS, identity
 * signing, flow reports) whose certificate the CA issues, policy from a watched directory,
 * enforcement modes, the translation into per-workload xDS resources, flow storage, and the HTTP
 * API and UI.
 */
export async function startControlPlane(config: ControlPlaneConfig): Promise<ControlPlane> {
  const dataDir = resolve(config.dataDir);
  const log = config.log;
  const cleanups: (() => Promise<void> | void)[] = [];
  const closeAll = async () => {
    for (const c of cleanups.splice(0).reverse()) {
      try {
        await c();
      } catch (err) {
        log.warn({ err }, "error while closing");
      }
    }
  };
  try {
    if (config.replication && config.policyDir)
      throw new Error(
        "--policy-dir cannot be combined with etcd: replicas share their policies in etcd (sigil policy apply)",
      );
    const replication = config.replication ? await openReplicatedState(config.replication, log) : undefined;
    if (replication) cleanups.push(() => replication.close());
    // A replica keeps only its bundle copy, admin token and flows here: nothing else creates it.
    await ensurePrivateDir(dataDir);
    const openIdentity = () =>
      openIdentityPlane({
        dataDir,
        trustDomain: config.trustDomain,
        kubernetes: config.kubernetes,
        importedCa: config.importedCa,
        log,
        shared: replication?.identity,
      });
    const identity = replication ? await replication.bootstrap(openIdentity) : await openIdentity();
    cleanups.push(() => identity.close());
    const metrics = createControlPlaneMetrics();

    const bundlePath = join(dataDir, BUNDLE_FILE);
    const serving = new ServingCredentials(identity, config, bundlePath, log);
    const grpc = await startGrpcServer({
      host: config.grpc.host,
      port: config.grpc.port,
      tls: await serving.current(),
      plaintext: config.xdsPlaintext,
    });
    cleanups.push(() => grpc.close());
    serving.attach(grpc);
    cleanups.push(() => serving.stop());

    const modes = replication
      ? ModeStore.withShared(replication.modes, replication.modes.initial(config.mode))
      : await ModeStore.open({ file: join(dataDir, "modes.json"), defaultMode: config.mode });
    if (config.mode && modes.settings().mesh !== config.mode) await modes.set({ kind: "mesh" }, config.mode);

    let policyStore: PolicyStore | undefined;
    let policyWriter: PolicyWriter | undefined;
    if (replication) {
      policyStore = await PolicyStore.open({ directory: "etcd", source: replication.policies, logger: log });
      policyWriter = replication.policies;
      cleanups.push(() => policyStore?.close());
    } else if (config.policyDir) {
      policyStore = await PolicyStore.open({ directory: resolve(config.policyDir), logger: log });
      policyWriter = directoryWriter(resolve(config.policyDir));
      cleanups.push(() => policyStore?.close());
      for (const e of policyStore.current().errors) log.warn({ policyError: e }, "policy file not in effect");
    }
    const policies = policySource(policyStore);

    // ADS streams arrive only after the service is registered below, once `mesh` exists.
    const xds = createXdsService(
      (node, peer) =>
        config.authorizeNode ? config.authorizeNode(node, peer) : mesh.authorizeNode(node, peer),
      log,
    );
    const mesh = new MeshPublisher({
      xds,
      identity,
      policies,
      modes,
      metrics,
      log,
      anonymousLoopback: config.xdsPlaintext !== undefined,
      addressClaims: config.addressClaims,
      registrations: replication?.registrations,
    });
    mesh.start();
    cleanups.push(() => mesh.stop());
    grpc.addService(xds.ads.definition, xds.ads.implementation);
    // A client certificate proves a workload only when it verifies against the bundle and revocations now.
    const verifiedCaller = (certificate: PeerCertificate | undefined) =>
      verifyPeerWorkload(certificate, {
        bundle: identity.ca.bundle(),
        revocations: identity.registry.revocationIndex(),
      }).identity;
    grpc.addService(
      IdentityServiceDefinition,
      countSignings(
        {
          ...identityServiceHandlers({ issuer: identity.issuer, log }),
          ...jwtSvidServiceHandlers({
            ca: identity.ca,
            log,
            authenticate: (call) => verifiedCaller(callPeer(call).certificate).spiffeId,
          }),
        },
        metrics,
      ),
    );

    const flows = await FlowStore.open({ dir: join(dataDir, "flows"), logger: log });
    cleanups.push(() => flows.close());
    grpc.addService(
      FlowServiceDefinition,
      flowServiceHandlers({
        store: flows,
        metrics,
        logger: log,
        authenticatePeer: (call) => {
          const { certificate } = callPeer(call);
          if (!certificate) return null;
          try {
            const verified = verifiedCaller(certificate);
            return { spiffeId: verified.spiffeId, serial: verified.serial };
          } catch (err) {
            log.warn({ peer: call.getPeer(), reason: (err as Error).message }, "flow stream refused");
            throw err;
          }
        },
        // Revoking a workload or the stream's certificate ends its open flow stream, as it ends its ADS streams.
        holdStream: (credential, end) => mesh.holdStream(credential, end),
      }),
    );
    log.info(
      { port: grpc.port, plaintextPort: grpc.plaintextPort },
      "gRPC listening (TLS): ADS, identity, flows",
    );

    const tokenFile = resolve(config.http.tokenFile ?? join(dataDir, ADMIN_TOKEN_FILE));
    // An operator's own file must exist: creating one in its place would hide a wrong path.
    const token = await loadAdminToken(tokenFile, config.http.tokenFile === undefined);
    const auth = new HttpAuth({ token });
    cleanups.push(() => auth.close());
    const router = new Router(auth.guard);
    router.addPublic("GET", "/healthz", (_req, res) => sendJson(res, 200, { status: "ok" }));
    // Public like Kubernetes' /version: a client compares releases before it has a credential.
    router.addPublic("GET", "/api/version", (_req, res) =>
      sendJson(res, 200, { version: SIGIL_VERSION, node: process.versions.node }),
    );
    const httpTls = config.http.tls ?? (isLoopbackHost(config.http.host) ? "off" : "sigil");
    registerSessionRoutes(router, auth, {
      secure: httpTls !== "off",
      limit: new SignInLimit({ attempts: config.http.signInAttemptsPerMinute }),
    });
    registerXdsRoutes(router, xds);
    registerMeshRoutes(router, mesh);
    registerIdentityRoutes(router, { plane: identity, log });
    // Replicas share the admin token, so one presents its own when it asks another for its flows.
    const replicaFlows = new ReplicaFlows({
      store: flows,
      peers: () => replication?.peers.others() ?? [],
      token,
      fetch: peerFetch(() => bundleRootsPem(identity.ca.bundle())),
    });
    if (policyStore && policyWriter) {
      const store = policyStore;
      registerPolicyFileRoutes(router, {
        writer: policyWriter,
        current: () => store.current(),
        texts: () => store.texts(),
        changed: () => store.reload(),
        records: (since, local) => replicaFlows.all(since === undefined ? {} : { since }, local),
      });
    }
    registerVisibilityRoutes(router, {
      store: flows,
      replicas: replicaFlows,
      modes,
      policies: () => documentsOf(policyStore),
      metrics,
    });
    const http = await createApiServer((req, res) => void router.handle(req, res), httpTls, serving);
    const httpPort = await listen(http, config.http.host, config.http.port);
    cleanups.push(() => closeHttp(http));
    const api = advertisedApi(config.http.advertise, config.http.host, httpPort, httpTls !== "off");
    if (replication && api) await replication.peers.announce(api);
    else if (replication)
      log.warn("no --api-advertise for a wildcard --http-host: other replicas cannot merge this one's flows");
    log.info(
      { port: httpPort, tokenFile, tls: httpTls !== "off" },
      "HTTP API listening (admin token in tokenFile)",
    );
    if (httpTls === "off" && !isLoopbackHost(config.http.host))
      log.warn(
        { host: config.http.host },
        "HTTP API on a non-loopback address in plain HTTP (tls: off): the admin token and session cookies cross the network unencrypted",
      );

    return {
      dataDir,
      trustDomain: identity.ca.trustDomain,
      grpc,
      router,
      httpPort,
      httpTls: httpTls !== "off",
      httpAuth: { tokenFile, token },
      bundlePath,
      xds,
      identity,
      flows,
      modes,
      policies: policyStore,
      mesh,
      metrics,
      replication,
      close: closeAll,
    };
  } catch (err) {
    await closeAll();
    throw err;
  }
}

/**
 * The gRPC listener's TLS material: a serving certificate issued by the Sigil CA (so the CA bundle
 * is all a sidecar needs to trust the control plane), renewed at half its lifetime and whenever the
 * bundle changes, and the bundle's roots as the client roots workloads are asked to chain to. The
 * bundle is also written to `bundle.pem` for sidecars to bootstrap from. The certificate lives no
 * longer than the CA's maximum leaf lifetime, so after a CA rotation it is replaced before the
 * retiring root leaves the bundle.
 */
class ServingCredentials {
  private server: RunningGrpcServer | undefined;
  private readonly listeners: ((tls: GrpcTlsOptions) => void)[] = [];
  private timer: NodeJS.Timeout | undefined;
  private readonly onBundle = () => void this.refresh();
  private stopped = false;

  constructor(
    private readonly identity: IdentityPlane,
    private readonly config: ControlPlaneConfig,
    private readonly bundlePath: string,
    private readonly log: Logger,
  ) {}

  /** The certificate last issued (without issuing another). */
  latest: GrpcTlsOptions | undefined;

  async current(): Promise<GrpcTlsOptions> {
    const bundle = this.identity.ca.bundle();
    const roots = bundleRootsPem(bundle);
    await writePublicFile(this.bundlePath, roots);
    const ttlSeconds = Math.min(30 * 24 * 3600, this.identity.ca.maxLeafTtlSeconds);
    const ipAddresses = ["127.0.0.1", "::1"];
    for (const host of [this.config.grpc.host, this.config.http.host]) {
      if (isIP(host) !== 0 && host !== "0.0.0.0" && host !== "::" && !ipAddresses.includes(host))
        ipAddresses.push(host);
    }
    const cert = await this.identity.ca.issueServingCertificate({
      dnsNames: this.config.serverNames,
      ipAddresses,
      ttlSeconds,
    });
    this.schedule((ttlSeconds * 1000) / 2);
    this.latest = { keyPem: cert.keyPem, certPem: cert.certPem, clientCaPem: roots, clientCerts: "request" };
    return this.latest;
  }

  /** Calls `listener` with every renewed certificate (the HTTP API's TLS server). */
  onRenew(listener: (tls: GrpcTlsOptions) => void): void {
    this.listeners.push(listener);
  }

  attach(server: RunningGrpcServer): void {
    this.server = server;
    this.identity.ca.on("bundle", this.onBundle);
  }

  stop(): void {
    this.stopped = true;
    this.identity.ca.off("bundle", this.onBundle);
    if (this.timer) clearTimeout(this.timer);
  }

  private schedule(ms: number): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.refresh(), ms);
    this.timer.unref();
  }

  private async refresh(): Promise<void> {
    if (this.stopped) return;
    try {
      const tls = await this.current();
      if (!this.stopped) {
        this.server?.updateTls(tls);
        for (const listener of this.listeners) listener(tls);
      }
      this.log.info({ bundleSequence: this.identity.ca.bundle().sequence }, "serving certificate renewed");
    } catch (err) {
      this.log.error({ err }, "renewing the serving certificate failed; retrying in 30 s");
      this.schedule(30_000);
    }
  }
}

/** Writes a file other users may read (the bundle is public), atomically so readers never see half of it. */
async function writePublicFile(path: string, content: string): Promise<void> {
  const tmp = `${path}.${process.pid}.tmp`;
  await writeFile(tmp, content, { mode: 0o644 });
  await rename(tmp, path);
}

function policySource(store: PolicyStore | undefined): PolicySource {
  if (store) {
    return {
      current: () => store.current(),
      onChange: (listener) => store.onChange(() => listener()),
    };
  }
  const empty: { set: CompiledPolicySet; revision: number } = { set: compilePolicySet([]), revision: 0 };
  return { current: () => empty, onChange: () => () => undefined };
}

function documentsOf(store: PolicyStore | undefined): readonly PolicyDocument[] {
  return store ? store.current().documents.map((d) => d.document) : [];
}

/** Whether a listen address stays on this host (a literal loopback address or `localhost`). */
export function isLoopbackHost(host: string): boolean {
  return host === "localhost" || host === "::1" || /^127\.\d+\.\d+\.\d+$/.test(host);
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
