/**
 * Child process for the control-plane dialing test: calls `Ping` on each target given, once with the
 * sidecar's bootstrap credentials and once with its SVID credentials, and prints one JSON line per
 * call (`{ target, kind, ok, error }`). Node prints its process warnings to this process's stderr,
 * which the test reads.
 *
 * Usage: tsx control-plane-dial.ts <trust-domain> <ca.pem> <client-cert.pem> <client-key.pem> <target>...
 */
import { readFileSync } from "node:fs";
import * as grpc from "@grpc/grpc-js";
import {
  SvidCertificateProvider,
  bootstrapChannelCredentials,
  controlPlaneIdentityCheck,
  svidChannelCredentials,
} from "../../sidecar/agent/control-plane-tls.ts";
import type { WorkloadCredentials } from "../../sidecar/identity/rotation.ts";
import { PING_SERVICE } from "./ping-service.ts";

const [trustDomain, caFile, certFile, keyFile, ...targets] = process.argv.slice(2);
if (!trustDomain || !caFile || !certFile || !keyFile || targets.length === 0) {
  process.stderr.write(
    "usage: control-plane-dial <trust-domain> <ca.pem> <cert.pem> <key.pem> <target>...\n",
  );
  process.exit(2);
}
const caPem = readFileSync(caFile, "utf8");
const check = controlPlaneIdentityCheck(trustDomain);
const provider = new SvidCertificateProvider(caPem);
// The provider presents only the PEM certificate chain and key of the credentials it is given.
provider.update({
  certChainPem: readFileSync(certFile, "utf8"),
  privateKeyPem: readFileSync(keyFile, "utf8"),
} as WorkloadCredentials);
const PingClient = grpc.makeGenericClientConstructor(PING_SERVICE, "Ping");

/** Null when the call succeeded, else the status details. */
function ping(target: string, credentials: grpc.ChannelCredentials): Promise<string | null> {
  const client = new PingClient(target, credentials, { "grpc.use_local_subchannel_pool": 1 });
  const call = client.Ping as (
    req: Buffer,
    options: grpc.CallOptions,
    cb: (err: grpc.ServiceError | null) => void,
  ) => void;
  return new Promise((resolve) => {
    call.call(client, Buffer.from("ping"), { deadline: Date.now() + 5_000 }, (err) => {
      client.close();
      resolve(err ? err.details : null);
    });
  });
}

for (const target of targets) {
  for (const [kind, credentials] of [
    ["bootstrap", bootstrapChannelCredentials(caPem, check)],
    ["svid", svidChannelCredentials(provider, check)],
  ] as const) {
    const error = await ping(target, credentials);
    process.stdout.write(`${JSON.stringify({ target, kind, ok: error === null, error })}\n`);
  }
}
