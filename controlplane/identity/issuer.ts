import { verify as verifySignature } from "node:crypto";
import { Counter, Histogram, Registry } from "prom-client";
import type { AttestedLabel } from "../../core/labels.ts";
import type { TrustBundle } from "../../core/svid/bundle.ts";
import { SvidVerificationError, verifySvid } from "../../core/svid/verify.ts";
import { jwtAudienceProblem } from "../../core/svid/jwt.ts";
import { isCertificateRevocation } from "../../core/svid/revocation.ts";
import type { CertificateAuthority } from "../ca/authority.ts";
import { AttestationError } from "../attestation/errors.ts";
import type { JoinTokens } from "../attestation/join-tokens.ts";
import type { KubernetesAttestor } from "../attestation/kubernetes.ts";
import type { KubernetesPods } from "../attestation/pod-source.ts";
import { factLabels } from "../attestation/workload-facts.ts";
import { checkCsrWithinAttestation, parseCsr } from "./csr-policy.ts";
import { renewalLabels } from "./pod-sync.ts";
import type { Attestor, WorkloadRegistry } from "./registry.ts";
import { effectiveLabels } from "./registry.ts";

/** One proof of who is asking. */
export type IdentityProof =
  | { readonly kind: "join-token"; readonly token: string }
  | { readonly kind: "kubernetes"; readonly serviceAccountToken: string }
  | { readonly kind: "renewal"; readonly certChain: readonly Buffer[]; readonly csrSignature: Buffer };

export interface SignRequest {
  readonly csr: Buffer;
  readonly proof: IdentityProof;
  /** Unvalidated process facts from the sidecar (checked here). */
  readonly process?: unknown;
  readonly metadata?: unknown;
  readonly jwtAudiences: readonly string[];
  /** 0 or absent: the default TTL. */
  readonly ttlSeconds?: number;
}

export interface SignResult {
  readonly spiffeId: string;
  readonly chain: readonly Buffer[];
  readonly jwtSvid: string;
  readonly bundle: TrustBundle;
  readonly notAfter: Date;
  readonly labels: readonly AttestedLabel[];
}

export interface IssuerOptions {
  readonly ca: CertificateAuthority;
  readonly tokens: JoinTokens;
  readonly registry: WorkloadRegistry;
  readonly kubernetes?: KubernetesAttestor;
  /** The cluster's pods, when the API server is configured: a Kubernetes renewal needs a live pod. */
  readonly pods?: KubernetesPods;
  readonly defaultTtlSeconds?: number;
}

interface Attested {
  readonly spiffeId: string;
  readonly attestor: Attestor;
  readonly attestedLabels: readonly AttestedLabel[];
  readonly attestedAddresses: readonly string[];
  /** Completes the attestation (uses up a join token) once the CSR has been accepted. */
  readonly commit: () => Promise<void>;
}

/**
 * Attests a workload and signs its SVIDs. Order matters: the CSR is parsed and its signature
 * checked first, then the proof is verified, then the CSR is held against what the proof showed,
 * and only then is a join token used up and a certificate signed.
 */
export class IdentityIssuer {
  readonly metrics = new Registry();
  private readonly outcomes = new Counter({
    name: "sigil_identity_sign_requests_total",
    help: "SVID signing requests by outcome",
    labelNames: ["outcome"] as const,
    registers: [this.metrics],
  });
  private readonly latency = new Histogram({
    name: "sigil_identity_sign_seconds",
    help: "Time to attest and sign one SVID",
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25],
    registers: [this.metrics],
  });
  private readonly defaultTtlSeconds: number;

  constructor(private readonly options: IssuerOptions) {
    this.defaultTtlSeconds = Math.min(options.defaultTtlSeconds ?? 3600, options.ca.maxLeafTtlSeconds);
  }

  async sign(request: SignRequest, now = new Date()): Promise<SignResult> {
    const stop = this.latency.startTimer();
    try {
      const result = await this.signUnmetered(request, now);
      this.outcomes.inc({ outcome: "issued" });
      return result;
    } catch (err) {
      this.outcomes.inc({ outcome: err instanceof Error ? err.constructor.name : "error" });
      throw err;
    } finally {
      stop();
    }
  }

  private async signUnmetered(request: SignRequest, now: Date): Promise<SignResult> {
    const { ca, registry } = this.options;
    const audiences = request.jwtAudiences.length > 0 ? request.jwtAudiences : ["sigil"];
    const audienceProblem = jwtAudienceProblem(audiences);
    if (audienceProblem) throw new RangeError(audienceProblem);
    const ttl = request.ttlSeconds
      ? Math.min(request.ttlSeconds, ca.maxLeafTtlSeconds)
      : this.defaultTtlSeconds;
    const csr = await parseCsr(request.csr);
    const attested = await this.attest(request, now);
    const record = registry.get(attested.spiffeId);
    if (record?.revoked) {
      throw new AttestationError(
        "revoked",
        `${attested.spiffeId} was revoked at ${new Date(record.revoked.atMs).toISOString()}: ${record.revoked.reason}`,
      );
    }
    const reportedLabels = factLabels(request.process, request.metadata);
    const labels = effectiveLabels({
      attestedLabels: attested.attestedLabels,
      reportedLabels,
      staticLabels: record?.staticLabels ?? [],
      scannerLabels: record?.scannerLabels ?? [],
    });
    checkCsrWithinAttestation(csr, attested.spiffeId, labels);
    await attested.commit();
    const svid = await ca.issueSvid({
      publicKey: csr.publicKey,
      spiffeId: attested.spiffeId,
      labels,
      ttlSeconds: ttl,
      now,
    });
    const jwtSvid = await ca.issueJwtSvid({
      spiffeId: attested.spiffeId,
      labels,
      audience: audiences,
      certificate: svid.chain[0] as Buffer,
      expiresAt: svid.notAfter,
      now,
    });
    await registry.recordIssuance({
      spiffeId: attested.spiffeId,
      attestor: attested.attestor,
      attestedLabels: attested.attestedLabels,
      attestedAddresses: attested.attestedAddresses,
      reportedLabels,
      issuedLabels: labels,
      serial: svid.serial,
      notAfter: svid.notAfter,
      now,
    });
    return {
      spiffeId: attested.spiffeId,
      chain: svid.chain,
      jwtSvid,
      bundle: ca.bundle(),
      notAfter: svid.notAfter,
      labels,
    };
  }

  private async attest(request: SignRequest, now: Date): Promise<Attested> {
    const { ca, tokens, registry, kubernetes } = this.options;
    const td = ca.trustDomain;
    const proof = request.proof;
    switch (proof.kind) {
      case "join-token": {
        const grant = await tokens.peek(proof.token, now);
        return {
          spiffeId: `spiffe://${td}/workload/${grant.name}`,
          attestor: "join-token",
          attestedLabels: grant.labels,
          attestedAddresses: grant.addresses,
          commit: async () => {
            await tokens.redeem(proof.token, now);
          },
        };
      }
      case "kubernetes": {
        if (!kubernetes)
          throw new AttestationError(
            "not-configured",
            "Kubernetes attestation is not configured on this control plane",
          );
        const k8s = await kubernetes.attest(proof.serviceAccountToken, now);
        return {
          spiffeId: `spiffe://${td}/ns/${k8s.namespace}/sa/${k8s.serviceAccount}`,
          attestor: "k8s-sat",
          attestedLabels: k8s.labels,
          attestedAddresses: [],
          commit: async () => undefined,
        };
      }
      case "renewal": {
        let verified;
        try {
          verified = verifySvid(proof.certChain, {
            bundle: ca.bundle(),
            purpose: "client",
            revocations: registry.revocationIndex(),
            now,
          });
        } catch (err) {
          if (err instanceof SvidVerificationError) {
            // A revoked workload gets nothing more (PERMISSION_DENIED); a certificate revoked on its
            // own proves nothing, but its workload may attest again (UNAUTHENTICATED).
            const workloadRevoked =
              err.reason === "revoked" && !(err.revocation && isCertificateRevocation(err.revocation));
            throw new AttestationError(
              workloadRevoked ? "revoked" : "invalid-renewal",
              `renewal certificate rejected: ${err.message}`,
            );
          }
          throw err;
        }
        let signed = false;
        try {
          signed = verifySignature("sha256", request.csr, verified.leaf.publicKey, proof.csrSignature);
        } catch {
          signed = false;
        }
        if (!signed)
          throw new AttestationError(
            "invalid-renewal",
            "renewal proof is not a signature over the CSR by the current SVID key",
          );
        const spiffeId = verified.identity.spiffeId;
        const record = registry.get(spiffeId);
        if (!record)
          throw new AttestationError("invalid-renewal", `${spiffeId} is not a registered workload`);
        return {
          spiffeId,
          attestor: record.attestor,
          attestedLabels: this.options.pods
            ? renewalLabels(record, this.options.pods)
            : record.attestedLabels,
          attestedAddresses: record.attestedAddresses,
          commit: async () => undefined,
        };
      }
    }
  }
}
