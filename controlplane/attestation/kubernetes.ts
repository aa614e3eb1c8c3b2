import { readFile } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { createLocalJWKSet, errors, jwtVerify } from "jose";
import type { JSONWebKeySet } from "jose";
import { parse as parseYaml } from "yaml";
import { z } from "zod";
import type { AttestedLabel } from "../../core/labels.ts";
import { AttestationError } from "./errors.ts";
import { IN_CLUSTER_DIR } from "./kube-api.ts";
import type { KubernetesPods, PodAttestationSettings } from "./pod-source.ts";

/** The cluster whose projected service-account tokens the control plane accepts. */
export interface KubernetesAttestorConfig {
  /** The `iss` of the cluster's service-account tokens. */
  readonly issuer: string;
  /** Audiences the token must carry (the projected volume's `audience`). */
  readonly audiences: readonly string[];
  /** The issuer's public keys (`/openid/v1/jwks`), configured ahead of time: no network at attestation. */
  readonly jwks: JSONWebKeySet;
  /**
   * The cluster's API server: when set, the token's pod is read from it (uid and service account
   * must match the token) and the pod labels become identity labels of provenance `k8s-api`.
   */
  readonly apiServer?: PodAttestationSettings;
}

export interface KubernetesIdentity {
  readonly namespace: string;
  readonly serviceAccount: string;
  readonly pod: string;
  /** The token's claims (`k8s-sat`), then the labels its service account's pods share (`k8s-api`). */
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
 * agrees with its namespace and service account. With `pods`, also the token's pod as the API
 * server knows it, whose service account's shared labels join the identity.
 */
export class KubernetesAttestor {
  private readonly keys: ReturnType<typeof createLocalJWKSet>;

  constructor(
    private readonly config: KubernetesAttestorConfig,
    private readonly pods?: KubernetesPods,
  ) {
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
    const podLabels = this.pods
      ? await this.pods.attestPod({
          namespace: k8s.namespace,
          serviceAccount: k8s.serviceaccount.name,
          pod: k8s.pod.name,
          podUid: k8s.pod.uid,
        })
      : null;
    return {
      namespace: k8s.namespace,
      serviceAccount: k8s.serviceaccount.name,
      pod: k8s.pod.name,
      labels: [
        { key: "k8s.ns", value: k8s.namespace, provenance: "k8s-sat" },
        { key: "k8s.sa", value: k8s.serviceaccount.name, provenance: "k8s-sat" },
        { key: "k8s.pod", value: k8s.pod.name, provenance: "k8s-sat" },
        ...(podLabels ?? []),
      ],
    };
  }
}

const apiServerSchema = z
  .object({
    url: z
      .string()
      .regex(/^https:\/\/[^/]+\/?$/, "must be https://host[:port]")
      .optional(),
    caFile: z.string().min(1).optional(),
    tokenFile: z.string().min(1).optional(),
    whenUnavailable: z.enum(["refuse", "token-claims-only"]).default("refuse"),
  })
  .strict();

const configFileSchema = z
  .object({
    issuer: z.string().min(1),
    audiences: z.array(z.string().min(1)).min(1),
    jwksFile: z.string().min(1),
    apiServer: z.union([z.literal("in-cluster"), apiServerSchema]).optional(),
  })
  .strict();

/**
 * The API server settings, each unset field defaulting to what a pod is given: the
 * `KUBERNETES_SERVICE_HOST`/`_PORT` address and the mounted service-account CA and token.
 */
function apiServerSettings(
  source: "in-cluster" | z.infer<typeof apiServerSchema>,
  base: string,
  env: NodeJS.ProcessEnv,
): PodAttestationSettings {
  const given = source === "in-cluster" ? { whenUnavailable: "refuse" as const } : source;
  let url = given.url;
  if (!url) {
    const host = env.KUBERNETES_SERVICE_HOST;
    if (!host)
      throw new Error("apiServer.url: not given and KUBERNETES_SERVICE_HOST is unset (not in a pod)");
    const port = env.KUBERNETES_SERVICE_PORT ?? "443";
    url = `https://${host.includes(":") ? `[${host}]` : host}:${port}`;
  }
  return {
    url,
    caFile: resolve(base, given.caFile ?? `${IN_CLUSTER_DIR}/ca.crt`),
    tokenFile: resolve(base, given.tokenFile ?? `${IN_CLUSTER_DIR}/token`),
    whenUnavailable: given.whenUnavailable,
  };
}

const jwksSchema = z.object({ keys: z.array(z.record(z.string(), z.unknown())).min(1) });

/**
 * Reads the cluster attestation settings from a YAML/JSON file `{ issuer, audiences, jwksFile,
 * apiServer? }`, where `jwksFile` (relative to the config file) holds the issuer's `/openid/v1/jwks`
 * document and `apiServer` is `in-cluster` or `{ url?, caFile?, tokenFile?, whenUnavailable? }`.
 */
export async function readKubernetesAttestorConfig(
  path: string,
  env: NodeJS.ProcessEnv = process.env,
): Promise<KubernetesAttestorConfig> {
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
  let apiServer: PodAttestationSettings | undefined;
  try {
    apiServer = config.data.apiServer && apiServerSettings(config.data.apiServer, dirname(path), env);
  } catch (err) {
    throw new Error(`${path}: ${(err as Error).message}`);
  }
  return {
    issuer: config.data.issuer,
    audiences: config.data.audiences,
    jwks: jwks.data as unknown as JSONWebKeySet,
    ...(apiServer ? { apiServer } : {}),
  };
}
