import type { LabelSelectorMessage, MtlsMode, PolicySetMessage } from "../../core/policy/index.ts";
import type { TypeRegistry, XdsResource } from "../../xds/registry.ts";
import { PEER_DIRECTORY, POLICY_SET, REVOCATION_LIST, TRUST_BUNDLE } from "../../xds/type-urls.ts";

/**
 * Typed builders for Sigil's own resources. Field names follow core/proto/sigil/v1/*.proto; the
 * registry validates every one before it can be published. The PolicySet's message types belong to
 * the policy codec (core/policy/codec.ts), which both ends share.
 */

export interface TrustBundleSpec {
  readonly trust_domain: string;
  readonly x509_roots_pem: readonly string[];
  readonly jwks_json?: string;
  readonly sequence: number;
  readonly refresh_hint_seconds?: number;
}

export function trustBundleResource(registry: TypeRegistry, b: TrustBundleSpec): XdsResource {
  return registry.encode(TRUST_BUNDLE, {
    trust_domain: b.trust_domain,
    x509_roots_pem: b.x509_roots_pem,
    jwks_json: b.jwks_json ?? "",
    sequence: b.sequence,
    refresh_hint: b.refresh_hint_seconds === undefined ? undefined : { seconds: b.refresh_hint_seconds },
  });
}

export function policySetResource(registry: TypeRegistry, p: PolicySetMessage): XdsResource {
  return registry.encode(POLICY_SET, { ...p, workload: p.workload ?? "" });
}

export interface WorkloadSpec {
  readonly name: string;
  readonly spiffe_id: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly addresses: readonly string[];
  readonly ports: readonly {
    port: number;
    protocol: "TCP" | "HTTP" | "GRPC";
    data_path: "L7_PROXY" | "L4_FAST_PATH";
    mtls?: MtlsMode;
  }[];
  readonly inbound_port?: number;
}

export interface ServiceSpec {
  readonly name: string;
  readonly namespace?: string;
  readonly workloads?: readonly string[];
  readonly selector?: LabelSelectorMessage;
  readonly ports?: readonly {
    name?: string;
    port: number;
    target_port?: number;
    protocol?: "TCP" | "HTTP" | "GRPC";
  }[];
  readonly hostnames?: readonly string[];
}

export function peerDirectoryResource(
  registry: TypeRegistry,
  d: {
    name: string;
    workloads: readonly WorkloadSpec[];
    services?: readonly ServiceSpec[];
    generation: number;
  },
): XdsResource {
  return registry.encode(PEER_DIRECTORY, {
    name: d.name,
    workloads: d.workloads,
    services: d.services ?? [],
    generation: d.generation,
  });
}

export interface RevocationListSpec {
  readonly trust_domain: string;
  readonly certificates: readonly {
    serial: string;
    spiffe_id?: string;
    revoked_at?: Date;
    expires_at?: Date;
    reason?: string;
  }[];
  readonly spiffe_ids: readonly string[];
  readonly sequence: number;
}

export function revocationListResource(registry: TypeRegistry, r: RevocationListSpec): XdsResource {
  return registry.encode(REVOCATION_LIST, {
    trust_domain: r.trust_domain,
    spiffe_ids: r.spiffe_ids,
    sequence: r.sequence,
    certificates: r.certificates.map((c) => ({
      serial: c.serial,
      spiffe_id: c.spiffe_id ?? "",
      reason: c.reason ?? "",
      revoked_at: c.revoked_at ? timestamp(c.revoked_at) : undefined,
      expires_at: c.expires_at ? timestamp(c.expires_at) : undefined,
    })),
  });
}

function timestamp(d: Date): { seconds: number; nanos: number } {
  const ms = d.getTime();
  return { seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1_000_000 };
}
