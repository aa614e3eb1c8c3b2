import { Command, InvalidArgumentError } from "commander";
import { pino } from "pino";
import { startControlPlane } from "./control-plane.ts";

function port(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new InvalidArgumentError(`not a port: ${value}`);
  return n;
}

const program = new Command("sigil-controlplane")
  .description("Sigil control plane: xDS over TLS gRPC, HTTP API")
  .option("--data-dir <dir>", "state directory", ".sigil-data")
  .option("--grpc-host <host>", "address of the TLS gRPC listener (xDS, identity)", "0.0.0.0")
  .option("--grpc-port <port>", "port of the TLS gRPC listener", port, 15010)
  .option(
    "--xds-plaintext-port <port>",
    "also serve xDS in plaintext on 127.0.0.1:<port> for proxyless gRPC clients (they cannot use TLS)",
    port,
  )
  .option("--http-host <host>", "address of the HTTP API", "0.0.0.0")
  .option("--http-port <port>", "port of the HTTP API", port, 15080)
  .option("--server-name <name...>", "DNS names in the control plane's serving certificate", [
    "sigil-controlplane",
  ])
  .parse();

const opts = program.opts<{
  dataDir: string;
  grpcHost: string;
  grpcPort: number;
  xdsPlaintextPort?: number;
  httpHost: string;
  httpPort: number;
  serverName: string[];
}>();

const log = pino({ name: "controlplane" }, pino.destination(2));

try {
  const cp = await startControlPlane({
    dataDir: opts.dataDir,
    grpc: { host: opts.grpcHost, port: opts.grpcPort },
    xdsPlaintext:
      opts.xdsPlaintextPort === undefined ? undefined : { host: "127.0.0.1", port: opts.xdsPlaintextPort },
    http: { host: opts.httpHost, port: opts.httpPort },
    serverNames: opts.serverName,
    log,
  });
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, "stopping");
    cp.close().then(
      () => process.exit(0),
      (err: unknown) => {
        log.error({ err }, "error while stopping");
        process.exit(1);
      },
    );
  };
  process.on("SIGINT", () => stop("SIGINT"));
  process.on("SIGTERM", () => stop("SIGTERM"));
} catch (err) {
  log.fatal({ err }, "control plane failed to start");
  process.exit(1);
}
