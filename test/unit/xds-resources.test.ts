import { describe, expect, it } from "vitest";
import { envoyResourcesFor } from "../../controlplane/xds/envoy.ts";
import {
  peerDirectoryResource,
  policySetResource,
  revocationListResource,
  trustBundleResource,
} from "../../controlplane/xds/sigil.ts";
import { Backoff } from "../../xds/backoff.ts";
import { defaultTypeRegistry, XdsResource } from "../../xds/registry.ts";
import { ResourceSet, Snapshot } from "../../xds/snapshot.ts";
import {
  CLUSTER_LOAD_ASSIGNMENT,
  LISTENER,
  PEER_DIRECTORY,
  POLICY_SET,
  TRUST_BUNDLE,
} from "../../xds/type-urls.ts";

const registry = defaultTypeRegistry();

describe("resource versions", () => {
  it("are content hashes: equal content, equal version, whatever the map key order", () => {
    const a = registry.encode(POLICY_SET, {
      name: "p",
      peer_authentication: { port_level: { "1": "STRICT", "2": "DISABLE" } },
    });
    const b = registry.encode(POLICY_SET, {
      name: "p",
      peer_authentication: { port_level: { "2": "DISABLE", "1": "STRICT" } },
    });
    const c = registry.encode(POLICY_SET, {
      name: "p",
      peer_authentication: { port_level: { "1": "STRICT" } },
    });
    expect(a.version).toBe(b.version);
    expect(a.version).not.toBe(c.version);
    expect(new ResourceSet(POLICY_SET, [a]).version).toBe(new ResourceSet(POLICY_SET, [b]).version);
  });

  it("cannot be forged: only the registry makes resources", () => {
    const forge = XdsResource as unknown as new (...args: unknown[]) => XdsResource;
    expect(() => new forge(Symbol("validated"), TRUST_BUNDLE, "x", "v", new Uint8Array())).toThrow(
      /TypeRegistry.encode only/,
    );
  });

  it("refuses two resources of one name in a snapshot", () => {
    const r = trustBundleResource(registry, { trust_domain: "a.test", x509_roots_pem: [], sequence: 1 });
    expect(() => Snapshot.of([r, r])).toThrow(/duplicate .*TrustBundle resource a.test/);
  });
});

describe("Sigil resources", () => {
  it("build, validate and decode back with typed fields", () => {
    const registryFields = (typeUrl: string, r: XdsResource) => registry.decode(typeUrl, r.value).message;
    const policy = policySetResource(registry, {
      name: "class-a",
      workload: "spiffe://sigil.local/workload/api",
      mode: "OBSERVE",
      ingress: [
        {
          id: "api-ingress/ingress/0",
          action: "ALLOW",
          peers: [
            {
              selector: {
                match_labels: { app: "web" },
                match_expressions: [{ key: "tier", operator: "IN", values: ["edge"] }],
              },
            },
            { cidrs: ["198.18.0.0/24"] },
          ],
          ports: [8080],
          http: {
            methods: ["GET"],
            paths: ["/api/*/orders"],
            headers: [{ name: "x-debug", present: false }],
          },
        },
      ],
      egress: [],
      egress_default_deny: false,
      peer_authentication: { mode: "STRICT", port_level: { "9090": "PERMISSIVE" } },
      generation: 7,
    });
    const p = registryFields(POLICY_SET, policy) as {
      mode: string;
      ingress: {
        peers: { selector: { match_expressions: { operator: string }[] } }[];
        http: { headers: { present: boolean }[] };
      }[];
      peer_authentication: { port_level: Record<string, string> };
    };
    expect(p.mode).toBe("OBSERVE");
    expect(p.ingress[0]?.peers[0]?.selector.match_expressions[0]?.operator).toBe("IN");
    expect(p.ingress[0]?.http.headers[0]?.present).toBe(false);
    expect(p.peer_authentication.port_level["9090"]).toBe("PERMISSIVE");

    const dir = peerDirectoryResource(registry, {
      name: "mesh",
      generation: 1,
      workloads: [
        {
          name: "db",
          spiffe_id: "spiffe://sigil.local/workload/db",
          labels: { app: "db" },
          addresses: ["198.18.0.5"],
          ports: [{ port: 5432, protocol: "TCP", data_path: "L4_FAST_PATH" }],
        },
      ],
    });
    expect(registryFields(PEER_DIRECTORY, dir).workloads).toMatchObject([
      { ports: [{ data_path: "L4_FAST_PATH" }] },
    ]);

    const rev = revocationListResource(registry, {
      trust_domain: "sigil.local",
      certificates: [{ serial: "0a", revoked_at: new Date(1_700_000_000_123) }],
      spiffe_ids: ["spiffe://sigil.local/workload/old"],
      sequence: 3,
    });
    expect(rev.name).toBe("sigil.local");
  });

  it("refuses a PolicySet with an operator outside the policy language", () => {
    expect(() =>
      registry.encode(POLICY_SET, {
        name: "x",
        ingress: [
          {
            id: "x/ingress/0",
            peers: [{ selector: { match_expressions: [{ key: "a", operator: "Matches" }] } }],
          },
        ],
      }),
    ).toThrow(
      'PolicySet "x": ingress[0].peers[0].selector.match_expressions[0].operator: "Matches" is not a value of enum Operator',
    );
  });
});

describe("Envoy resources for a service", () => {
  it("are the four linked resources a proxyless gRPC client needs", () => {
    const [listener, route, cluster, cla] = envoyResourcesFor(registry, {
      name: "echo",
      endpoints: [
        { address: "198.18.0.1", port: 50051 },
        { address: "198.18.0.2", port: 50051, healthy: false, weight: 3 },
      ],
    });
    expect(listener?.typeUrl).toBe(LISTENER);
    expect(listener?.name).toBe("echo");
    const l = registry.decode(LISTENER, listener?.value ?? new Uint8Array()).message as {
      api_listener: { api_listener: { type_url: string } };
    };
    expect(l.api_listener.api_listener.type_url).toContain("HttpConnectionManager");
    expect(route?.name).toBe("route/echo");
    expect(cluster?.name).toBe("cluster/echo");
    const e = registry.decode(CLUSTER_LOAD_ASSIGNMENT, cla?.value ?? new Uint8Array()).message as {
      endpoints: { lb_endpoints: { health_status: string }[]; load_balancing_weight: { value: number } }[];
    };
    expect(e.endpoints[0]?.lb_endpoints.map((x) => x.health_status)).toEqual(["HEALTHY", "UNHEALTHY"]);
    expect(e.endpoints[0]?.load_balancing_weight.value).toBe(1);
  });

  it("refuses a name that is not a valid xds:/// target and a port out of range", () => {
    expect(() => envoyResourcesFor(registry, { name: "bad name", endpoints: [] })).toThrow(
      /not a valid xDS target/,
    );
    expect(() =>
      envoyResourcesFor(registry, { name: "ok", endpoints: [{ address: "198.18.0.1", port: 70000 }] }),
    ).toThrow(/port out of range/);
  });
});

describe("backoff", () => {
  it("grows exponentially up to the cap with jitter in both directions, and resets", () => {
    const low = new Backoff({ initialMs: 100, maxMs: 1000, multiplier: 2, jitter: 0.2 }, () => 0);
    expect([low.next(), low.next(), low.next(), low.next(), low.next()]).toEqual([80, 160, 320, 640, 800]);
    const high = new Backoff({ initialMs: 100, maxMs: 1000, multiplier: 2, jitter: 0.2 }, () => 1);
    expect([high.next(), high.next()]).toEqual([120, 240]);
    low.reset();
    expect(low.next()).toBe(80);
  });
});
