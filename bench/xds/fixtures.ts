import type { TypeRegistry, XdsResource } from "../../xds/registry.ts";
import {
  peerDirectoryResource,
  policySetResource,
  revocationListResource,
  trustBundleResource,
} from "../../controlplane/xds/sigil.ts";
import type { RuleMessage } from "../../core/policy/index.ts";

/** Workloads with identical labels share a compiled PolicySet; the bench spreads nodes over this many classes. */
export const POLICY_CLASSES = 100;

export function nodeId(i: number): string {
  return `node-${i}`;
}

export function classOf(i: number): number {
  return i % POLICY_CLASSES;
}

/** A PolicySet of realistic size: a dozen L4 and L7 rules plus mTLS settings. */
export function policyFor(registry: TypeRegistry, cls: number, generation: number): XdsResource {
  const ingress: RuleMessage[] = Array.from({ length: 8 }, (_, i) => ({
    id: `svc-${cls}-ingress/ingress/${i}`,
    action: i === 7 ? "DENY" : "ALLOW",
    peers: [{ selector: { match_labels: { app: `client-${(cls + i) % POLICY_CLASSES}`, env: "prod" } } }],
    ports: [8080 + i],
    http: i % 2 === 0 ? { methods: ["GET", "POST"], paths: [`/api/v${i}/*/orders`, "/health"] } : undefined,
  }));
  const egress: RuleMessage[] = [
    {
      id: `svc-${cls}-egress/egress/0`,
      action: "ALLOW",
      peers: [{ selector: { match_labels: { app: "db" } } }],
      ports: [5432],
    },
    {
      id: `mesh-wide/egress/${generation}`,
      action: "ALLOW",
      peers: [{ dns_names: ["*.example.com"] }],
      ports: [443],
    },
  ];
  return policySetResource(registry, {
    name: `class-${cls}`,
    mode: cls % 10 === 0 ? "OBSERVE" : "ENFORCE",
    ingress,
    egress,
    egress_default_deny: true,
    peer_authentication: { mode: "STRICT", port_level: { "9090": "PERMISSIVE" } },
    generation,
  });
}

export function sharedResources(registry: TypeRegistry): XdsResource[] {
  const roots = ["-----BEGIN CERTIFICATE-----\n" + "A".repeat(600) + "\n-----END CERTIFICATE-----\n"];
  return [
    trustBundleResource(registry, {
      trust_domain: "sigil.local",
      x509_roots_pem: roots,
      sequence: 1,
      refresh_hint_seconds: 300,
    }),
    revocationListResource(registry, {
      trust_domain: "sigil.local",
      certificates: [
        { serial: "0a1b2c", spiffe_id: "spiffe://sigil.local/workload/old", reason: "key compromise" },
      ],
      spiffe_ids: [],
      sequence: 1,
    }),
    peerDirectoryResource(registry, {
      name: "mesh",
      generation: 1,
      workloads: Array.from({ length: 50 }, (_, i) => ({
        name: `w${i}`,
        spiffe_id: `spiffe://sigil.local/workload/w${i}`,
        labels: { app: `client-${i}`, env: "prod" },
        addresses: [`198.18.${i >> 8}.${i & 255}`],
        ports: [
          { port: 8080, protocol: "HTTP" as const, data_path: "L7_PROXY" as const, mtls: "STRICT" as const },
        ],
      })),
    }),
  ];
}
