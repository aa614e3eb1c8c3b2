import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

const PROTO_DIR = fileURLToPath(new URL(".", import.meta.url));

/** A Sigil gRPC service: the definition a grpc.Server registers and the client constructor. */
export interface SigilService {
  readonly definition: grpc.ServiceDefinition;
  readonly Client: grpc.ServiceClientConstructor;
}

/**
 * Loads `sigil.v1.<service>` from `core/proto/<file>` with the object conventions every Sigil
 * service shares (camelCase fields, numbers for 64-bit integers, enum names, defaults, oneof names).
 */
export function loadSigilService(file: string, service: string): SigilService {
  const packageDefinition = protoLoader.loadSync(file, {
    includeDirs: [PROTO_DIR],
    keepCase: false,
    longs: Number,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  const loaded = grpc.loadPackageDefinition(packageDefinition) as {
    sigil?: { v1?: Record<string, unknown> };
  };
  const Client = loaded.sigil?.v1?.[service] as grpc.ServiceClientConstructor | undefined;
  if (typeof Client !== "function" || !Client.service) {
    throw new Error(`${file} does not define the service sigil.v1.${service}`);
  }
  return { definition: Client.service, Client };
}
