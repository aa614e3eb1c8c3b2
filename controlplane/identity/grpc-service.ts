import * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";
import { bundleToJson } from "../../core/svid/bundle.ts";
import { AttestationError } from "../attestation/errors.ts";
import { InvalidCsrError, OverReachError } from "./csr-policy.ts";
import type { IdentityIssuer, IdentityProof, SignRequest } from "./issuer.ts";
import type { WireMetadataFacts, WireSignSvidRequest, WireSignSvidResponse } from "../../core/svid/wire.ts";

export { IdentityServiceDefinition } from "../../core/svid/wire.ts";

export interface IdentityServiceDeps {
  readonly issuer: IdentityIssuer;
  readonly log?: Logger;
}

class BadRequest extends Error {}

function proofOf(wire: WireSignSvidRequest): IdentityProof {
  const a = wire.attestation;
  if (!a) throw new BadRequest("request has no attestation");
  switch (a.proof) {
    case "joinToken":
      if (!a.joinToken?.token) throw new BadRequest("join_token.token is empty");
      return { kind: "join-token", token: a.joinToken.token };
    case "kubernetes":
      if (!a.kubernetes?.serviceAccountToken)
        throw new BadRequest("kubernetes.service_account_token is empty");
      return { kind: "kubernetes", serviceAccountToken: a.kubernetes.serviceAccountToken };
    case "renewal":
      if (!a.renewal || a.renewal.certChain.length === 0) throw new BadRequest("renewal.cert_chain is empty");
      return { kind: "renewal", certChain: a.renewal.certChain, csrSignature: a.renewal.csrSignature };
    default:
      throw new BadRequest("attestation carries no proof (join_token, kubernetes or renewal)");
  }
}

function metadataOf(m: WireMetadataFacts | null): unknown {
  if (!m) return undefined;
  return {
    cloudRegion: m.cloudRegion || undefined,
    cloudZone: m.cloudZone || undefined,
    image: m.image || undefined,
    vulnerabilities: m.vulnerabilities ?? undefined,
  };
}

/** Converts the decoded protobuf request into the issuer's request, refusing incomplete ones. */
export function signRequestFromWire(wire: WireSignSvidRequest): SignRequest {
  if (!wire.csr || wire.csr.length === 0) throw new BadRequest("csr is empty");
  return {
    csr: wire.csr,
    proof: proofOf(wire),
    process: wire.attestation?.process ?? undefined,
    metadata: metadataOf(wire.attestation?.metadata ?? null),
    jwtAudiences: wire.jwtAudiences,
    ttlSeconds: wire.ttlSeconds,
  };
}

function statusOf(err: unknown): grpc.status | null {
  if (err instanceof BadRequest || err instanceof InvalidCsrError || err instanceof RangeError)
    return grpc.status.INVALID_ARGUMENT;
  if (err instanceof OverReachError) return grpc.status.PERMISSION_DENIED;
  if (err instanceof AttestationError) {
    if (err.failure === "attestor-unavailable") return grpc.status.UNAVAILABLE;
    return err.failure === "revoked" || err.failure === "invalid-facts"
      ? grpc.status.PERMISSION_DENIED
      : grpc.status.UNAUTHENTICATED;
  }
  return null;
}

/**
 * Handlers of `sigil.v1.IdentityService` for `server.addService(IdentityServiceDefinition, ...)`.
 * Refusals carry the reason in the status details; unexpected failures are logged and answered
 * with INTERNAL and no detail.
 */
export function identityServiceHandlers(deps: IdentityServiceDeps): grpc.UntypedServiceImplementation {
  return {
    SignSvid: (
      call: grpc.ServerUnaryCall<WireSignSvidRequest, WireSignSvidResponse>,
      callback: grpc.sendUnaryData<WireSignSvidResponse>,
    ) => {
      (async () => {
        const result = await deps.issuer.sign(signRequestFromWire(call.request));
        deps.log?.info(
          { spiffeId: result.spiffeId, peer: call.getPeer(), notAfter: result.notAfter },
          "issued SVID",
        );
        return {
          spiffeId: result.spiffeId,
          certChain: [...result.chain],
          jwtSvid: result.jwtSvid,
          trustBundleJson: bundleToJson(result.bundle),
          trustBundleSequence: result.bundle.sequence,
          expiresAtUnixMs: result.notAfter.getTime(),
          labels: result.labels.map((l) => ({ key: l.key, value: l.value, provenance: l.provenance })),
        };
      })().then(
        (response) => callback(null, response),
        (err: unknown) => {
          const code = statusOf(err);
          if (code === null) {
            deps.log?.error({ err, peer: call.getPeer() }, "SVID signing failed");
            callback({ code: grpc.status.INTERNAL, details: "internal error while signing" });
            return;
          }
          deps.log?.warn({ peer: call.getPeer(), reason: (err as Error).message }, "SVID request refused");
          callback({ code, details: (err as Error).message });
        },
      );
    },
  };
}
