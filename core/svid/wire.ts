import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

/**
 * `sigil.v1.IdentityService` (core/proto/sigil/v1/identity.proto) loaded once, shared by the
 * control plane's handlers and the sidecar's client, with the plain-object shapes proto-loader
 * produces for its messages.
 */

const PROTO_DIR = fileURLToPath(new URL("../proto", import.meta.url));

const packageDefinition = protoLoader.loadSync("sigil/v1/identity.proto", {
  includeDirs: [PROTO_DIR],
  keepCase: false,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
});

interface IdentityPackage {
  sigil: { v1: { IdentityService: grpc.ServiceClientConstructor } };
}

const loaded = grpc.loadPackageDefinition(packageDefinition) as unknown as IdentityPackage;

/** Add to a grpc.Server together with `identityServiceHandlers(...)`. */
export const IdentityServiceDefinition: grpc.ServiceDefinition = loaded.sigil.v1.IdentityService.service;

/** Client constructor for `sigil.v1.IdentityService`. */
export const IdentityServiceClient: grpc.ServiceClientConstructor = loaded.sigil.v1.IdentityService;

export interface WireProcessFacts {
  uid: number;
  gid: number;
  user: string;
  exePath: string;
  exeSha256: string;
}

export interface WireMetadataFacts {
  cloudRegion: string;
  cloudZone: string;
  image: string;
  vulnerabilities: { critical: number; high: number; medium: number; low: number } | null;
}

export interface WireSignSvidRequest {
  csr: Buffer;
  attestation: {
    proof?: "joinToken" | "kubernetes" | "renewal";
    joinToken?: { token: string } | null;
    kubernetes?: { serviceAccountToken: string } | null;
    renewal?: { certChain: Buffer[]; csrSignature: Buffer } | null;
    process: WireProcessFacts | null;
    metadata: WireMetadataFacts | null;
  } | null;
  jwtAudiences: string[];
  ttlSeconds: number;
}

export interface WireSignSvidResponse {
  spiffeId: string;
  certChain: Buffer[];
  jwtSvid: string;
  trustBundleJson: string;
  trustBundleSequence: number;
  expiresAtUnixMs: number;
  labels: { key: string; value: string; provenance: string }[];
}
