import { describe, expect, it } from "vitest";
import {
  registrationFromMetadata,
  registrationMetadata,
  RegistrationError,
} from "../../core/registration.ts";
import {
  contentGeneration,
  contentKey,
  workloadName,
  workloadSpec,
} from "../../controlplane/mesh/translate.ts";
import { compilePolicySet, encodePolicySet, parsePolicyDocuments } from "../../core/policy/index.ts";
import { defaultTypeRegistry } from "../../xds/registry.ts";
import { policySetResource, peerDirectoryResource } from "../../controlplane/xds/sigil.ts";

const YAML = `apiVersion: sigil.dev/v1
kind: AuthorizationPolicy
metadata: { name: api-in }
spec:
  selector: { matchLabels: { app: api } }
  ingress:
    - action: deny
      from: [ { matchExpressions: [ { key: vuln.critical, operator: Exists } ] } ]
    - action: allow
      from:
        - matchLabels: { app: web }
          matchExpressions: [ { key: tier, operator: In, values: [ frontend, edge ] } ]
        - cidrs: [ "198.18.0.0/24" ]
      ports: [ 8080 ]
      http:
        methods: [ GET ]
        paths: [ "/api/**" ]
        headers: [ { name: x-debug, present: false }, { name: x-tenant, value: acme } ]
---
apiVersion: sigil.dev/v1
kind: AuthorizationPolicy
metadata: { name: all-egress }
spec:
  selector: {}
  egress:
    - action: allow
      to: [ { dnsNames: [ "*.example.com" ] }, { matchLabels: {} } ]
---
apiVersion: sigil.dev/v1
kind: PeerAuthentication
metadata: { name: api-mtls }
spec:
  selector: { matchLabels: { app: api } }
  mode: PERMISSIVE
  portLevel: { "8080": STRICT }
`;

function compiled() {
  const parsed = parsePolicyDocuments(YAML, "test.yaml");
  if (!parsed.ok) throw new Error(JSON.stringify(parsed.errors));
  return compilePolicySet(parsed.documents.map((d) => d.document));
}

describe("policy translation into a PolicySet", () => {
  it("carries every selected rule with its source id, matchers and HTTP conditions", () => {
    const set = compiled();
    const content = encodePolicySet(set, { app: "api" }, "enforce");
    expect(content.ingress.map((r) => r.id)).toEqual(["api-in/ingress/0", "api-in/ingress/1"]);
    expect(content.ingress[0]).toMatchObject({
      action: "DENY",
      peers: [
        { selector: { match_expressions: [{ key: "vuln.critical", operator: "EXISTS", values: [] }] } },
      ],
    });
    expect(content.ingress[1]).toMatchObject({
      action: "ALLOW",
      ports: [8080],
      peers: [
        {
          selector: {
            match_labels: { app: "web" },
            match_expressions: [{ key: "tier", operator: "IN", values: ["frontend", "edge"] }],
          },
          cidrs: [],
        },
        { selector: undefined, cidrs: ["198.18.0.0/24"] },
      ],
      http: {
        methods: ["GET"],
        paths: ["/api/**"],
        headers: [
          { name: "x-debug", present: false },
          { name: "x-tenant", value: "acme" },
        ],
      },
    });
    expect(content.egress.map((r) => r.id)).toEqual(["all-egress/egress/0"]);
    expect(content.egress[0]?.peers).toEqual([
      { selector: undefined, cidrs: [], dns_names: ["*.example.com"] },
      { selector: { match_labels: {}, match_expressions: [] }, cidrs: [], dns_names: [] },
    ]);
    expect(content.egress_default_deny).toBe(true);
    expect(content.peer_authentication).toEqual({ mode: "PERMISSIVE", port_level: { "8080": "STRICT" } });
    // The registry validates it strictly: a misspelled or mistyped field would throw here.
    const resource = policySetResource(defaultTypeRegistry(), { ...content, name: "p", generation: 1 });
    expect(resource.name).toBe("p");
  });

  it("gives equal content (and key) to workloads selecting the same policies in the same mode", () => {
    const set = compiled();
    const a = encodePolicySet(set, { app: "web", pod: "a" }, "enforce");
    const b = encodePolicySet(set, { app: "web", pod: "b" }, "enforce");
    const observe = encodePolicySet(set, { app: "web" }, "observe");
    const api = encodePolicySet(set, { app: "api" }, "enforce");
    expect(contentKey(a)).toBe(contentKey(b));
    expect(contentKey(observe)).not.toBe(contentKey(a));
    expect(observe.mode).toBe("OBSERVE");
    expect(contentKey(api)).not.toBe(contentKey(a));
    expect(a.peer_authentication).toEqual({ mode: "STRICT", port_level: {} });
  });

  it("derives generations from content, so equal content has one version on every replica", () => {
    const set = compiled();
    const a = encodePolicySet(set, { app: "web" }, "enforce");
    const again = encodePolicySet(compiled(), { app: "web" }, "enforce");
    const observe = encodePolicySet(set, { app: "web" }, "observe");
    expect(contentGeneration(a)).toBe(contentGeneration(again));
    expect(contentGeneration(observe)).not.toBe(contentGeneration(a));
    expect(Number.isSafeInteger(contentGeneration(a))).toBe(true);
    const resource = (generation: number) =>
      policySetResource(defaultTypeRegistry(), { ...a, name: "p", generation });
    expect(resource(contentGeneration(a)).version).toBe(resource(contentGeneration(again)).version);
  });
});

describe("peer directory entries", () => {
  it("derive each port's protocol, data path and mTLS mode from policy and the registration", () => {
    const set = compiled();
    const entry = workloadSpec(set, {
      name: "api",
      spiffeId: "spiffe://sigil.local/workload/api",
      labels: { app: "api" },
      registration: {
        addresses: ["198.18.0.11"],
        appPorts: [8080, 9000],
        fastPathPorts: [8080, 9000],
        inboundPort: 15006,
      },
    });
    expect(entry.ports).toEqual([
      // HTTP rules and STRICT both keep 8080 on the proxy although the sidecar offers the fast path.
      { port: 8080, protocol: "HTTP", data_path: "L7_PROXY", mtls: "STRICT" },
      { port: 9000, protocol: "TCP", data_path: "L4_FAST_PATH", mtls: "PERMISSIVE" },
    ]);
    expect(entry.inbound_port).toBe(15006);
    const resource = peerDirectoryResource(defaultTypeRegistry(), {
      name: "mesh",
      workloads: [entry],
      generation: 1,
    });
    expect(resource.name).toBe("mesh");
  });

  it("names workloads after their SPIFFE IDs", () => {
    expect(workloadName("spiffe://sigil.local/workload/web")).toBe("web");
    expect(workloadName("spiffe://sigil.local/ns/demo/sa/api")).toBe("api.demo");
  });
});

describe("registration in node metadata", () => {
  it("round-trips", () => {
    const r = {
      addresses: ["198.18.0.2", "2001:db8::2"],
      appPorts: [8080, 9090],
      fastPathPorts: [9090],
      inboundPort: 15106,
    };
    expect(registrationFromMetadata(registrationMetadata(r))).toEqual(r);
  });

  it("is absent when the metadata names none of its keys", () => {
    expect(registrationFromMetadata({ other: "x" })).toBeNull();
  });

  it.each([
    [{ "sigil.addresses": "198.18.0.300" }, "sigil.addresses"],
    [{ "sigil.addresses": "198.18.0.2,,198.18.0.3" }, "sigil.addresses"],
    [{ "sigil.app_ports": "80,70000" }, "sigil.app_ports"],
    [{ "sigil.app_ports": "8080", "sigil.fast_path_ports": "9090" }, "sigil.fast_path_ports"],
    [{ "sigil.app_ports": "15006" }, "sigil.inbound_port"],
    [{ "sigil.inbound_port": "0x10" }, "sigil.inbound_port"],
    [{ "sigil.addresses": ["198.18.0.2"] }, "sigil.addresses"],
  ])("refuses malformed metadata %j naming %s", (metadata, field) => {
    expect(() => registrationFromMetadata(metadata)).toThrow(RegistrationError);
    expect(() => registrationFromMetadata(metadata)).toThrow(field);
  });
});
