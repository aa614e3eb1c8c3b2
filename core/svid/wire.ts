import type * as grpc from "@grpc/grpc-js";
import { loadSigilService } from "../proto/load-service.ts";

/**
 * `sigil.v1.IdentityService` (core/proto/sigil/v1/identity.proto) loaded once, shared by the
 * control plane's handlers and the sidecar's client, with the plain-object shapes proto-loader
 * produces for its messages.
 */

const identityService = loadSigilService("sigil/v1/identity.proto", "IdentityService");

/** Add to a grpc.Server together with `identityServiceHandlers(...)`. */
export const IdentityServiceDefinition: grpc.ServiceDefinition = identityService.definition;

/** Client constructor for `sigil.v1.IdentityService`. */
export const IdentityServiceClient: grpc.ServiceClientConstructor = identityService.Client;

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

export interface WireSignJwtSvidRequest {
  audience: string[];
  ttlSeconds: number;
}

export interface WireSignJwtSvidResponse {
  spiffeId: string;
  jwtSvid: string;
  expiresAtUnixMs: number;
}
