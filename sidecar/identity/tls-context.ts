import { createSecureContext } from "node:tls";
import type { SecureContext, SecureContextOptions } from "node:tls";
import { bundleRootsPem } from "../../core/svid/bundle.ts";
import type { WorkloadCredentials } from "./rotation.ts";

/** node:tls options presenting the workload's SVID and trusting its bundle's roots. */
export function tlsOptionsFor(credentials: WorkloadCredentials): SecureContextOptions {
  return {
    key: credentials.privateKeyPem,
    cert: credentials.certChainPem,
    ca: bundleRootsPem(credentials.bundle),
    minVersion: "TLSv1.3",
  };
}

/** A secure context for new connections (`tls.connect({ secureContext })`, `server.setSecureContext`). */
export function secureContextFor(credentials: WorkloadCredentials): SecureContext {
  return createSecureContext(tlsOptionsFor(credentials));
}
