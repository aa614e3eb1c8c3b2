import { createLocalJWKSet, errors, jwtVerify } from "jose";
import type { JSONWebKeySet } from "jose";
import { z } from "zod";
import type { AttestedLabel } from "../../core/labels.ts";
import { AttestationError } from "./errors.ts";

/** The cluster whose projected service-account tokens the control plane accepts. */
export interface KubernetesAttestorConfig {
  /** The `iss` of the cluster's service-account tokens. */
  readonly issuer: string;
  /** Audiences the token must carry (the projected volume's `audience`). */
  readonly audiences: readonly string[];
  /** The issuer's public keys (`/openid/v1/jwks`), configured ahead of time: no network at attestation. */
  readonly jwks: JSONWebKeySet;
}

export interface KubernetesIdentity {
  readonly namespace: string;
  readonly serviceAccount: string;
  readonly pod: string;
  readonly labels: readonly AttestedLabel[];
}

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;

const claimsSchema = z.object({
  sub: z.string(),
  "kubernetes.io": z.object({
    namespace: z.string().regex(DNS_LABEL, "namespace is not a DNS label"),
    serviceaccount: z.object({
      name: z.string().regex(DNS_SUBDOMAIN, "service account name invalid"),
      uid: z.string(),
    }),
    pod: z.object({ name: z.string().regex(DNS_SUBDOMAIN, "pod name invalid"), uid: z.string() }),
  }),
});

/**
 * Verifies Kubernetes projected service-account tokens offline: signature by a key of the
 * configured JWKS (RS256 or ES256), issuer, audience, expiry, and a pod-bound token whose `sub`
 * agrees with its namespace and service account.
 */
export class KubernetesAttestor {
  private readonly keys: ReturnType<typeof createLocalJWKSet>;

  constructor(private readonly config: KubernetesAttestorConfig) {
    if (config.audiences.length === 0) throw new Error("Kubernetes attestation needs at least one audience");
    this.keys = createLocalJWKSet(config.jwks);
  }

  async attest(token: string, now = new Date()): Promise<KubernetesIdentity> {
    let payload: Record<string, unknown>;
    try {
      ({ payload } = await jwtVerify(token, this.keys, {
        issuer: this.config.issuer,
        audience: [...this.config.audiences],
        algorithms: ["RS256", "ES256"],
        requiredClaims: ["exp", "iat", "sub"],
        currentDate: now,
      }));
    } catch (err) {
      const reason = err instanceof errors.JOSEError ? `${err.code}: ${err.message}` : (err as Error).message;
      throw new AttestationError("invalid-sa-token", `service-account token rejected: ${reason}`);
    }
    const claims = claimsSchema.safeParse(payload);
    if (!claims.success) {
      const issue = claims.error.issues[0];
      throw new AttestationError(
        "invalid-sa-token",
        `service-account token claim ${issue?.path.join(".")}: ${issue?.message}`,
      );
    }
    const k8s = claims.data["kubernetes.io"];
    const expectedSub = `system:serviceaccount:${k8s.namespace}:${k8s.serviceaccount.name}`;
    if (claims.data.sub !== expectedSub) {
      throw new AttestationError(
        "invalid-sa-token",
        `service-account token sub "${claims.data.sub}" does not match ${expectedSub}`,
      );
    }
    return {
      namespace: k8s.namespace,
      serviceAccount: k8s.serviceaccount.name,
      pod: k8s.pod.name,
      labels: [
        { key: "k8s.ns", value: k8s.namespace, provenance: "k8s-sat" },
        { key: "k8s.sa", value: k8s.serviceaccount.name, provenance: "k8s-sat" },
        { key: "k8s.pod", value: k8s.pod.name, provenance: "k8s-sat" },
      ],
    };
  }
}
