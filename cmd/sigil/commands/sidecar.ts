import cluster from "node:cluster";
import type { Command } from "commander";
import type { AgentOptions } from "../../../sidecar/agent/options.ts";
import { parseAccessLogSpec } from "../../../sidecar/authz/access-log.ts";
import type { AccessLogRule } from "../../../sidecar/authz/access-log.ts";
import { announceReady, createLogger, logProcessFaults } from "../../../core/logger.ts";

/**
 * `sigil sidecar`: the per-workload agent (sidecar/agent). Settings come from `--config` (YAML or
 * JSON, camelCase keys) with flags overriding. Prints a JSON ready line (`event: "ready"`, `spiffeId`) on stdout
 * once it holds an SVID and a policy set and listens; drains and exits 0 on SIGTERM/SIGINT.
 * With `--workers N` the same command line is re-run as each data-path worker (node:cluster), which
 * takes everything from its primary over IPC.
 */

function collect(value: string, previous: string[] | undefined): string[] {
  const parts = value
    .split(",")
    .map((v) => v.trim())
    .filter((v) => v !== "");
  return [...(previous ?? []), ...parts];
}

function integer(flag: string): (value: string) => number {
  return (value) => {
    if (!/^\d+$/.test(value)) throw new Error(`${flag}: ${JSON.stringify(value)} is not a whole number`);
    return Number(value);
  };
}

function ports(flag: string, values: readonly string[] | undefined): number[] | undefined {
  return values?.map(integer(flag));
}

export interface SidecarFlags {
  config?: string;
  controlPlane?: string;
  controlPlaneCa?: string;
  joinToken?: string;
  joinTokenFile?: string;
  serviceAccountTokenFile?: string;
  trustDomain?: string;
  workloadName?: string;
  workloadPid?: number;
  workloadUid?: number | string;
  workloadExe?: string;
  metadataFile?: string;
  identityDir?: string;
  appPort?: string[];
  advertiseAddress?: string[];
  mode?: string;
  inboundPort?: number;
  outboundPort?: number;
  adminHost?: string;
  adminPort?: number;
  outbound?: string[];
  plaintextAppPort?: number;
  peerInboundPort?: number;
  fastPathPorts?: string[];
  httpPorts?: string[];
  userAccessPorts?: string[];
  userAccessConfig?: string;
  fastPathFailOpen?: boolean;
  captureConfig?: string;
  svidTtl?: number;
  workloadApiSocket?: string;
  workloadApiUid?: string[];
  drainTimeoutMs?: number;
  workers?: number | "auto";
  logLevel?: string;
  accessLog?: AccessLogRule[];
}

function workerCount(value: string): number | "auto" {
  return value === "auto" ? "auto" : integer("--workers")(value);
}

/** The agent's options from the command's flags and the `--config` file they name (flags win). */
export async function sidecarOptions(flags: SidecarFlags): Promise<AgentOptions> {
  // The sidecar's modules load only when it runs, so every other sigil command starts fast.
  const { parseAgentOptions, readAgentConfigFile } = await import("../../../sidecar/agent/options.ts");
  const file = flags.config ? await readAgentConfigFile(flags.config) : {};
  const fromFlags: Record<string, unknown> = {
    controlPlane: flags.controlPlane,
    controlPlaneCa: flags.controlPlaneCa,
    joinToken: flags.joinToken,
    joinTokenFile: flags.joinTokenFile,
    serviceAccountTokenFile: flags.serviceAccountTokenFile,
    trustDomain: flags.trustDomain,
    workloadName: flags.workloadName,
    workloadPid: flags.workloadPid,
    workloadUid: flags.workloadUid,
    workloadExe: flags.workloadExe,
    metadataFile: flags.metadataFile,
    identityDir: flags.identityDir,
    appPort: ports("--app-port", flags.appPort),
    advertiseAddress: flags.advertiseAddress,
    mode: flags.mode,
    inboundPort: flags.inboundPort,
    outboundPort: flags.outboundPort,
    adminHost: flags.adminHost,
    adminPort: flags.adminPort,
    outbound: flags.outbound,
    plaintextAppPort: flags.plaintextAppPort,
    peerInboundPort: flags.peerInboundPort,
    fastPathPorts: ports("--fast-path-ports", flags.fastPathPorts),
    httpPorts: ports("--http-ports", flags.httpPorts),
    fastPathFailOpen: flags.fastPathFailOpen,
    captureConfig: flags.captureConfig,
    svidTtlSeconds: flags.svidTtl,
    workloadApiSocket: flags.workloadApiSocket,
    workloadApiUid: flags.workloadApiUid?.map(integer("--workload-api-uid")),
    drainTimeoutMs: flags.drainTimeoutMs,
    workers: flags.workers,
    logLevel: flags.logLevel,
    accessLog: flags.accessLog,
  };
  const merged: Record<string, unknown> = { ...file };
  for (const [k, v] of Object.entries(fromFlags)) if (v !== undefined) merged[k] = v;
  // `--user-access-config` holds the userAccess block alone (an injected pod's Secret), so it can set
  // nothing else of the sidecar's; it replaces the block of --config.
  const block = flags.userAccessConfig
    ? await readAgentConfigFile(flags.userAccessConfig)
    : (file.userAccess as object | undefined);
  const userAccessPorts = ports("--user-access-ports", flags.userAccessPorts);
  if (block !== undefined || userAccessPorts !== undefined)
    merged.userAccess = { ...block, ...(userAccessPorts === undefined ? {} : { ports: userAccessPorts }) };
  // A proof given on the command line replaces any other named in the config.
  for (const key of ["joinToken", "joinTokenFile", "serviceAccountTokenFile"] as const)
    if (flags[key] !== undefined)
      for (const other of ["joinToken", "joinTokenFile", "serviceAccountTokenFile"])
        if (other !== key) delete merged[other];
  return parseAgentOptions(merged, flags.config ?? "sigil sidecar");
}

export function register(program: Command): void {
  program
    .command("sidecar")
    .description("run the workload's sidecar: identity, policy over xDS, mTLS proxying, flow reports")
    .option("--config <file>", "settings file (YAML or JSON, camelCase keys); flags override it")
    .option(
      "--control-plane <host:port,...>",
      "control plane gRPC address (xDS, identity, flows); several replicas comma-separated, or one DNS name with several addresses",
    )
    .option("--control-plane-ca <bundle.pem>", "roots the control plane's certificate must chain to")
    .option("--join-token <token>", "one-time join token for the first SVID")
    .option("--join-token-file <file>", "file holding the join token")
    .option(
      "--service-account-token-file <file>",
      "projected Kubernetes service-account token (Kubernetes attestation), re-read at every bootstrap",
    )
    .option(
      "--identity-dir <dir>",
      "keep the current SVID and key here (0600) so a restart renews with them instead of the single-use join token",
    )
    .option("--trust-domain <td>", "trust domain of the mesh (default sigil.local)")
    .option("--workload-name <name>", "the workload's name (node id cluster, directory registration)")
    .option(
      "--workload-pid <pid>",
      "protected process: its /proc facts go into attestation",
      integer("--workload-pid"),
    )
    .option(
      "--workload-uid <uid|user>",
      "protected process by its attributes (a VM): the user it runs as; its /proc facts go into attestation",
      (value: string) => (/^\d+$/.test(value) ? Number(value) : value),
    )
    .option("--workload-exe <path>", "with --workload-uid: the executable the protected process runs")
    .option(
      "--metadata-file <file>",
      "node metadata (cloud, image, vulnerabilities); a change renews the SVID",
    )
    .option(
      "--app-port <port...>",
      "the application's ports to protect inbound (repeat or comma-separate)",
      collect,
    )
    .option(
      "--advertise-address <ip...>",
      "addresses the workload is reachable at (repeat or comma-separate; auto = this host's own)",
      collect,
    )
    .option("--mode <mode>", "captured (iptables set up by `sigil init`) or explicit")
    .option("--inbound-port <port>", "inbound listener (default 15006)", integer("--inbound-port"))
    .option("--outbound-port <port>", "outbound capture listener (default 15001)", integer("--outbound-port"))
    .option(
      "--admin-host <address>",
      "admin listener address (default 127.0.0.1; 0.0.0.0 lets Prometheus scrape /stats/prometheus)",
    )
    .option("--admin-port <port>", "admin listener port (default 15000)", integer("--admin-port"))
    .option(
      "--outbound <[host:]port=host:port...>",
      "explicit mode: a local listener standing for one destination",
      collect,
    )
    .option(
      "--plaintext-app-port <port>",
      "explicit mode: app port for plaintext clients",
      integer("--plaintext-app-port"),
    )
    .option(
      "--peer-inbound-port <port>",
      "peers' inbound port when the directory names none (default 15006)",
      integer("--peer-inbound-port"),
    )
    .option("--fast-path-ports <port...>", "L4 ports enforced in the TCP handshake", collect)
    .option(
      "--http-ports <port...>",
      "app ports served as HTTP only, never as opaque TCP (needed where the app trusts x-forwarded-client-cert)",
      collect,
    )
    .option(
      "--user-access-ports <port...>",
      "app ports served to people: OpenID Connect sign-in (the userAccess block of --config names the provider)",
      collect,
    )
    .option(
      "--user-access-config <file>",
      "the userAccess block alone (YAML: issuer, clientId, redirectUri, sessionKeyFile, ...); replaces the one in --config",
    )
    .option(
      "--capture-config <file>",
      "the capture config `sigil init` applied: fast-path rules join its transaction",
    )
    .option("--fast-path-fail-open", "let new fast-path connections through when the enforcer is gone")
    .option("--svid-ttl <seconds>", "requested SVID lifetime", integer("--svid-ttl"))
    .option(
      "--workload-api-socket <path>",
      "serve the SPIFFE Workload API on this Unix socket (its directory writable by the sidecar's user only)",
    )
    .option(
      "--workload-api-uid <uid,...>",
      "uids of the workload's processes, the only callers the Workload API hands the identity to",
      collect,
    )
    .option(
      "--drain-timeout-ms <ms>",
      "how long connections may take to finish on SIGTERM",
      integer("--drain-timeout-ms"),
    )
    .option(
      "--workers <n|auto>",
      "data-path processes sharing the listeners (default 1; auto = one per CPU)",
      workerCount,
    )
    .option("--log-level <level>", "fatal|error|warn|info|debug|trace|silent")
    .option(
      "--access-log <port=mode[:share],...>",
      "access-log lines per port: all, denied (default) or off, sampled (8080=all:0.1,9090=off)",
      parseAccessLogSpec,
    )
    .action(async (flags: SidecarFlags) => {
      if (cluster.isWorker) {
        const { runSidecarWorker } = await import("../../../sidecar/worker-processes/worker.ts");
        runSidecarWorker();
        return;
      }
      try {
        await runSidecar(flags);
      } catch (err) {
        // Settings refused or start-up failed: said as a log line like everything else on stderr.
        createLogger("sigil-sidecar").fatal({ err }, "sidecar failed to start");
        process.exitCode = 1;
      }
    });
}

async function runSidecar(flags: SidecarFlags): Promise<void> {
  const options = await sidecarOptions(flags);
  const log = createLogger("sigil-sidecar", { level: options.logLevel });
  logProcessFaults(log);

  const { startAgent } = await import("../../../sidecar/agent/agent.ts");
  const agent = await startAgent(options, { logger: log });
  let stopping = false;
  const stop = (signal: NodeJS.Signals): void => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, "stopping");
    agent.drain().then(
      ({ clean }) => {
        log.info({ clean }, "stopped");
        process.exit(0);
      },
      (err: Error) => {
        log.error({ err: err.message }, "drain failed");
        process.exit(1);
      },
    );
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
  announceReady("sigil-sidecar", { spiffeId: agent.spiffeId }, "sigil sidecar ready");
}
