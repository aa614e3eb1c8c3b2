import { readFile } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { createLocalJWKSet, errors, jwtVerify } from "jose";
import type { JSONWebKeySet } from "jose";
import { parse as parseYaml } from "yaml";
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

const configFileSchema = z
  .object({
    issuer: z.string().min(1),
    audiences: z.array(z.string().min(1)).min(1),
    jwksFile: z.string().min(1),
  })
  .strict();

const jwksSchema = z.object({ keys: z.array(z.record(z.string(), z.unknown())).min(1) });

/**
 * Reads the cluster attestation settings from a YAML/JSON file `{ issuer, audiences, jwksFile }`,
 * where `jwksFile` (relative to the config file) holds the issuer's `/openid/v1/jwks` document.
 */
export async function readKubernetesAttestorConfig(path: string): Promise<KubernetesAttestorConfig> {
  const parse = async (file: string) => {
    try {
      return parseYaml(await readFile(file, "utf8")) as unknown;
    } catch (err) {
      throw new Error(`cannot read ${file}: ${(err as Error).message}`);
    }
  };
  const config = configFileSchema.safeParse(await parse(path));
  if (!config.success) {
    const issue = config.error.issues[0];
    throw new Error(`${path}: ${issue?.path.join(".") || "document"}: ${issue?.message}`);
  }
  const jwksPath = resolve(dirname(path), config.data.jwksFile);
  const jwks = jwksSchema.safeParse(await parse(jwksPath));
  if (!jwks.success) throw new Error(`${jwksPath}: not a JWK set with at least one key`);
  return {
    issuer: config.data.issuer,
    audiences: config.data.audiences,
    jwks: jwks.data as unknown as JSONWebKeySet,
  };
}
