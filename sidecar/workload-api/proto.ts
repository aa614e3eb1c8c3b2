import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

/** The SPIFFE Workload API's published definition (core/proto/spiffe/workload/, see its README). */
export const WORKLOAD_PROTO = fileURLToPath(
  new URL("../../core/proto/spiffe/workload/workload.proto", import.meta.url),
);

function loadDefinition(): grpc.ServiceDefinition {
  const definition = protoLoader.loadSync(WORKLOAD_PROTO, {
    keepCase: false,
    longs: Number,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  const service = (grpc.loadPackageDefinition(definition) as Record<string, unknown>).SpiffeWorkloadAPI as
    grpc.ServiceClientConstructor | undefined;
  if (typeof service !== "function" || !service.service)
    throw new Error(`${WORKLOAD_PROTO} does not define the service SpiffeWorkloadAPI`);
  return service.service;
}

let loaded: grpc.ServiceDefinition | undefined;

/**
 * `SpiffeWorkloadAPI` (no package, as published), for `server.addService`. Read on first use, so a
 * sidecar that serves no Workload API never reads the file or holds the definition.
 */
export function workloadApiDefinition(): grpc.ServiceDefinition {
  loaded ??= loadDefinition();
  return loaded;
}
