import { existsSync } from "node:fs";
import { Command, InvalidArgumentError, Option } from "commander";
import { readKubernetesAttestorConfig } from "../../controlplane/attestation/kubernetes.ts";
import { startControlPlane } from "../../controlplane/control-plane.ts";
import { startInjectionWebhook } from "../../inject/webhook/control-plane.ts";
import { readWebhookConfig } from "../../inject/webhook/config.ts";
import { ENVELOPE_KEY_ENV } from "../../controlplane/store/envelope.ts";
import { announceReady, createLogger, logProcessFaults } from "../../core/logger.ts";

function port(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || n > 65535) throw new InvalidArgumentError(`not a port: ${value}`);
  return n;
}

const DEFAULT_POLICY_DIR = "examples/policies";

const program = new Command("sigil-controlplane")
  .description(
    "Sigil control plane: CA and identity issuance, policy, xDS over TLS gRPC, flows, HTTP API and UI",
  )
  .option("--data-dir <dir>", "state directory (CA, registry, flows, modes)", ".sigil-data")
  .option("--trust-domain <name>", "trust domain of a new CA (an existing CA keeps its own)", "sigil.local")
  .option(
    "--policy-dir <dir>",
    `directory of policy YAML, watched (default: ${DEFAULT_POLICY_DIR} when it exists, else none)`,
  )
  .addOption(
    new Option(
      "--mode <mode>",
      "mesh-wide enforcement mode (default: the stored one, enforce at first)",
    ).choices(["enforce", "observe"]),
  )
  .option("--grpc-host <host>", "address of the TLS gRPC listener (xDS, identity, flows)", "0.0.0.0")
  .option("--grpc-port <port>", "port of the TLS gRPC listener", port, 15010)
  .option(
    "--xds-plaintext-port <port>",
    "also serve mesh-wide xDS in plaintext on 127.0.0.1:<port> for proxyless gRPC clients (they cannot use TLS)",
    port,
  )
  // Every API call needs the admin token; off loopback the API is served over TLS unless the
  // operator turns it off explicitly.
  .option("--http-host <host>", "address of the HTTP API and web UI", "127.0.0.1")
  .addOption(
    new Option(
      "--http-tls <mode>",
      "TLS for the HTTP API: sigil = a certificate from Sigil's CA, off = plain HTTP, auto = sigil off loopback (with --http-cert-file/--http-key-file: the operator's own)",
    )
      .choices(["auto", "sigil", "off"])
      .default("auto"),
  )
  .option("--http-cert-file <path>", "PEM certificate chain the HTTP API serves (with --http-key-file)")
  .option("--http-key-file <path>", "PEM private key of --http-cert-file")
  .option("--http-port <port>", "port of the HTTP API", port, 15080)
  .option(
    "--http-token-file <path>",
    "file holding the HTTP API's admin token (default: <data-dir>/http-token, created on first start)",
  )
  .option("--server-name <name...>", "DNS names in the control plane's serving certificate", [
    "sigil-controlplane",
    "localhost",
  ])
  .addOption(
    new Option(
      "--address-claims <mode>",
      "publish a workload address registered without evidence (not on its join token, not the address its stream comes from): evidence = never, first-claim = to its first claimant (sidecars behind NAT)",
    )
      .choices(["evidence", "first-claim"])
      .default("evidence"),
  )
  .option(
    "--kubernetes-attestation <file>",
    "accept projected service-account tokens: YAML { issuer, audiences, jwksFile, apiServer? } of the cluster's issuer; apiServer (in-cluster or { url, caFile, tokenFile, whenUnavailable }) reads the token's pod and its labels",
  )
  .option(
    "--webhook <file>",
    "serve the sidecar injection webhook over HTTPS: YAML { host, port, dnsNames, inject: {...} }",
  )
  .option(
    "--etcd <urls>",
    "run as a replica: keep the configuration state in etcd at these client URLs (comma-separated); policies then come from etcd (sigil policy apply), not --policy-dir",
  )
  .option(
    "--envelope-key-file <path>",
    `with --etcd: file (0600) holding the 256-bit key that seals the CA keys in etcd (default: $${ENVELOPE_KEY_ENV})`,
  )
  .option("--etcd-prefix <prefix>", "with --etcd: key prefix", "/sigil/")
  .option("--replica-id <name>", "with --etcd: this replica's name in the leader election (default: random)")
  .option(
    "--api-advertise <url>",
    "with --etcd: the URL other replicas reach this one's HTTP API at, to merge its flows into theirs (default: the --http-host address; needed when it is 0.0.0.0 or ::)",
  )
  .option("--log-level <level>", "log level (stderr)", "info")
  .parse();

const opts = program.opts<{
  dataDir: string;
  trustDomain: string;
  policyDir?: string;
  mode?: "enforce" | "observe";
  grpcHost: string;
  grpcPort: number;
  xdsPlaintextPort?: number;
  httpHost: string;
  httpPort: number;
  httpTokenFile?: string;
  httpTls: "auto" | "sigil" | "off";
  httpCertFile?: string;
  httpKeyFile?: string;
  serverName: string[];
  addressClaims: "evidence" | "first-claim";
  kubernetesAttestation?: string;
  webhook?: string;
  etcd?: string;
  envelopeKeyFile?: string;
  etcdPrefix: string;
  replicaId?: string;
  apiAdvertise?: string;
  logLevel: string;
}>();

const log = createLogger("controlplane", { level: opts.logLevel });
logProcessFaults(log);
const policyDir =
  opts.policyDir ?? (!opts.etcd && existsSync(DEFAULT_POLICY_DIR) ? DEFAULT_POLICY_DIR : undefined);
const replication = opts.etcd
  ? {
      etcdEndpoints: opts.etcd
        .split(",")
        .map((u) => u.trim())
        .filter((u) => u !== ""),
      envelopeKey: { file: opts.envelopeKeyFile },
      prefix: opts.etcdPrefix,
      replicaId: opts.replicaId,
    }
  : undefined;

function httpTls(): "sigil" | "off" | { certFile: string; keyFile: string } | undefined {
  if ((opts.httpCertFile === undefined) !== (opts.httpKeyFile === undefined))
    throw new Error("--http-cert-file and --http-key-file go together");
  if (opts.httpCertFile && opts.httpKeyFile) {
    if (opts.httpTls === "off") throw new Error("--http-cert-file contradicts --http-tls off");
    return { certFile: opts.httpCertFile, keyFile: opts.httpKeyFile };
  }
  return opts.httpTls === "auto" ? undefined : opts.httpTls;
}

function hostPort(host: string, p: number): string {
  return host.includes(":") ? `[${host}]:${p}` : `${host}:${p}`;
}

try {
  const cp = await startControlPlane({
    dataDir: opts.dataDir,
    trustDomain: opts.trustDomain,
    policyDir,
    mode: opts.mode,
    grpc: { host: opts.grpcHost, port: opts.grpcPort },
    xdsPlaintext:
      opts.xdsPlaintextPort === undefined ? undefined : { host: "127.0.0.1", port: opts.xdsPlaintextPort },
    http: {
      host: opts.httpHost,
      port: opts.httpPort,
      tokenFile: opts.httpTokenFile,
      tls: httpTls(),
      advertise: opts.apiAdvertise,
    },
    serverNames: opts.serverName,
    addressClaims: opts.addressClaims,
    kubernetes: opts.kubernetesAttestation
      ? await readKubernetesAttestorConfig(opts.kubernetesAttestation)
      : undefined,
    log,
    replication,
  });
  const webhookConfig = opts.webhook ? await readWebhookConfig(opts.webhook, cp.trustDomain) : undefined;
  const webhook = webhookConfig
    ? await startInjectionWebhook({ ca: cp.identity.ca, ...webhookConfig, log })
    : undefined;
  log.info({ policyDir: policyDir ?? null, trustDomain: cp.trustDomain }, "control plane started");
  announceReady(
    "controlplane",
    {
      grpc: hostPort(opts.grpcHost, cp.grpc.port),
      http: hostPort(opts.httpHost, cp.httpPort),
      bundle: cp.bundlePath,
      webUi: `${cp.httpTls ? "https" : "http"}://${hostPort(opts.httpHost, cp.httpPort)}/`,
      tokenFile: cp.httpAuth.tokenFile,
      ...(webhook && webhookConfig
        ? { webhook: `https://${hostPort(webhookConfig.host, webhook.port)}/inject` }
        : {}),
    },
    "sigil control plane ready",
  );
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, "stopping");
    Promise.all([webhook?.close(), cp.close()]).then(
      () => process.exit(0),
      (err: unknown) => {
        log.error({ err }, "error while stopping");
        process.exit(1);
      },
    );
  };
  process.on("SIGINT", () => stop("SIGINT"));
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGHUP", () => {
    cp.policies?.reload().catch((err: unknown) => log.error({ err }, "policy reload failed"));
  });
} catch (err) {
  log.fatal({ err }, "control plane failed to start");
  process.exit(1);
}
