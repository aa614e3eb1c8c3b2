import type { SecureContextOptions } from "node:tls";
import { bundleRootsPem } from "../../core/svid/bundle.ts";
import type { WorkloadCredentials } from "../../sidecar/identity/rotation.ts";

/** node:tls options presenting the workload's SVID and trusting its bundle's roots. */
export function tlsOptionsFor(credentials: WorkloadCredentials): SecureContextOptions {
  return {
    key: credentials.privateKeyPem,
    cert: credentials.certChainPem,
    ca: bundleRootsPem(credentials.bundle),
    minVersion: "TLSv1.3",
  };
}
