import { describe, expect, it } from "vitest";
import { compilePolicySet, parsePolicyDocuments } from "../../core/policy/index.ts";
import { chooseInboundPaths, chooseOutboundPaths, fastPathPorts } from "../../sidecar/fastpath/ports.ts";

const YAML = `
apiVersion: sigil.dev/v1
kind: AuthorizationPolicy
metadata: { name: db }
spec:
  selector: { matchLabels: { app: db } }
  ingress:
    - { action: allow, from: [ { matchLabels: { app: web } } ], ports: [ 5432, 9090 ] }
    - { action: allow, ports: [ 8080 ], http: { paths: [ "/health" ] } }
  egress:
    - { action: allow, ports: [ 443 ], http: { hosts: [ "api.partner.test" ] } }
    - { action: allow, ports: [ 6379 ] }
---
apiVersion: sigil.dev/v1
kind: PeerAuthentication
metadata: { name: db-mtls }
spec:
  selector: { matchLabels: { app: db } }
  mode: PERMISSIVE
  portLevel: { "9090": STRICT }
`;

describe("per-port choice between fast path and L7 proxy", () => {
  const parsed = parsePolicyDocuments(YAML, "test.yaml");
  if (!parsed.ok) throw new Error(JSON.stringify(parsed.errors));
  const set = compilePolicySet(parsed.documents.map((d) => d.document));
  const db = { app: "db" };

  it("sends HTTP-rule ports and STRICT mTLS ports to the proxy, plain L4 ports to the fast path", () => {
    const choices = chooseInboundPaths(set, db, [5432, 8080, 9090]);
    expect(choices.map((c) => [c.port, c.path])).toEqual([
      [5432, "fastpath"],
      [8080, "proxy"],
      [9090, "proxy"],
    ]);
    expect(choices[2]?.why).toMatch(/STRICT/);
    expect(fastPathPorts(choices)).toEqual([5432]);
  });

  it("keeps every port on the proxy when mTLS is STRICT by default (no PeerAuthentication)", () => {
    expect(fastPathPorts(chooseInboundPaths(set, { app: "other" }, [5432]))).toEqual([]);
  });

  it("routes outbound ports with HTTP egress rules through the proxy", () => {
    expect(fastPathPorts(chooseOutboundPaths(set, db, [443, 6379]))).toEqual([6379]);
  });
});
