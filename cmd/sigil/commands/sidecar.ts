import cluster from "node:cluster";
import type { Command } from "commander";
import pino from "pino";
import { startAgent } from "../../../sidecar/agent/agent.ts";
import { parseAgentOptions, readAgentConfigFile } from "../../../sidecar/agent/options.ts";
import { runSidecarWorker } from "../../../sidecar/worker-processes/worker.ts";

/**
 * `sigil sidecar`: the per-workload agent (sidecar/agent). Settings come from `--config` (YAML or
 * JSON, camelCase keys) with flags overriding. Prints `sigil sidecar ready spiffe=<id>` on stdout
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

interface Flags {
  config?: string;
  controlPlane?: string;
  controlPlaneCa?: string;
  joinToken?: string;
  joinTokenFile?: string;
  serviceAccountTokenFile?: string;
  trustDomain?: string;
  workloadName?: string;
  workloadPid?: number;
  metadataFile?: string;
  appPort?: string[];
  advertiseAddress?: string[];
  mode?: string;
  inboundPort?: number;
  outboundPort?: number;
  adminPort?: number;
  outbound?: string[];
  plaintextAppPort?: number;
  peerInboundPort?: number;
  fastPathPorts?: string[];
  httpPorts?: string[];
  userAccessPorts?: string[];
  fastPathFailOpen?: boolean;
  captureConfig?: string;
  svidTtl?: number;
  drainTimeoutMs?: number;
  workers?: number | "auto";
  logLevel?: string;
}

function workerCount(value: string): number | "auto" {
  return value === "auto" ? "auto" : integer("--workers")(value);
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
    .option("--trust-domain <td>", "trust domain of the mesh (default sigil.local)")
    .option("--workload-name <name>", "the workload's name (node id cluster, directory registration)")
    .option(
      "--workload-pid <pid>",
      "protected process: its /proc facts go into attestation",
      integer("--workload-pid"),
    )
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
    .option("--admin-port <port>", "admin listener on loopback (default 15000)", integer("--admin-port"))
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
      "--capture-config <file>",
      "the capture config `sigil init` applied: fast-path rules join its transaction",
    )
    .option("--fast-path-fail-open", "let new fast-path connections through when the enforcer is gone")
    .option("--svid-ttl <seconds>", "requested SVID lifetime", integer("--svid-ttl"))
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
    .action(async (flags: Flags) => {
      if (cluster.isWorker) {
        runSidecarWorker();
        return;
      }
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
        metadataFile: flags.metadataFile,
        appPort: ports("--app-port", flags.appPort),
        advertiseAddress: flags.advertiseAddress,
        mode: flags.mode,
        inboundPort: flags.inboundPort,
        outboundPort: flags.outboundPort,
        adminPort: flags.adminPort,
        outbound: flags.outbound,
        plaintextAppPort: flags.plaintextAppPort,
        peerInboundPort: flags.peerInboundPort,
        fastPathPorts: ports("--fast-path-ports", flags.fastPathPorts),
        httpPorts: ports("--http-ports", flags.httpPorts),
        fastPathFailOpen: flags.fastPathFailOpen,
        captureConfig: flags.captureConfig,
        svidTtlSeconds: flags.svidTtl,
        drainTimeoutMs: flags.drainTimeoutMs,
        workers: flags.workers,
        logLevel: flags.logLevel,
      };
      const merged: Record<string, unknown> = { ...file };
      for (const [k, v] of Object.entries(fromFlags)) if (v !== undefined) merged[k] = v;
      const userAccessPorts = ports("--user-access-ports", flags.userAccessPorts);
      if (userAccessPorts !== undefined)
        merged.userAccess = { ...(file.userAccess as object | undefined), ports: userAccessPorts };
      // A proof given on the command line replaces any other named in the config.
      for (const key of ["joinToken", "joinTokenFile", "serviceAccountTokenFile"] as const)
        if (flags[key] !== undefined)
          for (const other of ["joinToken", "joinTokenFile", "serviceAccountTokenFile"])
            if (other !== key) delete merged[other];
      const options = parseAgentOptions(merged, flags.config ?? "sigil sidecar");
      const log = pino({ name: "sigil-sidecar", level: options.logLevel }, pino.destination(2));

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
      process.stdout.write(`sigil sidecar ready spiffe=${agent.spiffeId}\n`);
    });
}
