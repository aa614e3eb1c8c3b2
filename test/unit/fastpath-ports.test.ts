import { describe, expect, it } from "vitest";
import { compilePolicySet, parsePolicyDocuments } from "../../core/policy/index.ts";
import { decodePeerDirectory } from "../../sidecar/agent/peer-directory.ts";
import {
  chooseInboundPaths,
  chooseOutboundPaths,
  fastPathPorts,
  outboundFastPathDestinations,
} from "../../sidecar/fastpath/ports.ts";
import { RuleError, renderRules } from "../../sidecar/fastpath/rules.ts";

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

describe("outbound fast path by destination", () => {
  const directory = decodePeerDirectory(
    {
      name: "mesh",
      workloads: [
        {
          name: "db",
          spiffe_id: "spiffe://sigil.local/workload/db",
          addresses: ["198.18.0.2", "2001:2::2"],
          ports: [
            { port: 5432, data_path: "L4_FAST_PATH", mtls: "PERMISSIVE" },
            { port: 6379, data_path: "L7_PROXY", mtls: "STRICT" },
          ],
        },
        {
          name: "strict-db",
          spiffe_id: "spiffe://sigil.local/workload/strict-db",
          addresses: ["198.18.0.3"],
          ports: [{ port: 5432, data_path: "L7_PROXY", mtls: "STRICT" }],
        },
        {
          name: "old",
          spiffe_id: "spiffe://sigil.local/workload/old",
          addresses: ["198.18.0.4"],
          ports: [{ port: 5432 }],
        },
      ],
    },
    { trustDomain: "sigil.local", sidecarPort: 15006 },
  ).entries.map(([where]) => where);

  it("takes a destination port on the fast path only where the directory says L4_FAST_PATH", () => {
    expect(outboundFastPathDestinations([5432, 6379], directory)).toEqual({
      destinations: [
        { address: "198.18.0.2", ports: [5432] },
        { address: "2001:2::2", ports: [5432] },
      ],
      overflow: 0,
    });
    // A port the client's own policy keeps on the proxy stays there whatever the destination says.
    expect(outboundFastPathDestinations([6379], directory).destinations).toEqual([]);
  });

  it("leaves destinations past the limit on the proxy path and says how many", () => {
    const many = Array.from({ length: 5 }, (_, i) => ({
      address: `198.18.1.${i}`,
      port: 5432,
      fastPath: true,
    }));
    const { destinations, overflow } = outboundFastPathDestinations([5432], many, 3);
    expect(destinations.map((d) => d.address)).toEqual(["198.18.1.0", "198.18.1.1", "198.18.1.2"]);
    expect(overflow).toBe(2);
  });

  it("renders one u32 address test per destination into the queue chain, nothing for other SYNs", () => {
    const text = renderRules({
      inboundPorts: [],
      outboundPorts: [5432],
      outboundDestinations: [
        { address: "198.18.0.2", ports: [5432, 6379] },
        { address: "2001:2::2", ports: [5432] },
      ],
      queueFirst: 0,
      queueCount: 1,
      failOpen: false,
    });
    const out = text.split("\n").filter((l) => l.startsWith("-A SIGIL-FP-OUT "));
    expect(out).toContain(
      "-A SIGIL-FP-OUT -p tcp --tcp-flags SYN,ACK,RST,FIN SYN -m multiport --dports 5432 -m u32 --u32 0>>28=4&&16=0xc6120002 -j SIGIL-FP-OUTQ",
    );
    expect(out).toContain(
      "-A SIGIL-FP-OUT -p tcp --tcp-flags SYN,ACK,RST,FIN SYN -m multiport --dports 5432 -m u32 --u32 0>>28=6&&24=0x20010002&&28=0x0&&32=0x0&&36=0x2 -j SIGIL-FP-OUTQ",
    );
    // The SYN rules of SIGIL-FP-OUT queue nothing themselves; 6379 is not an outbound port here.
    expect(out.filter((l) => / SYN -m multiport/.test(l) && l.includes("NFQUEUE"))).toEqual([]);
    expect(text).not.toContain("6379");
    expect(text).toContain("-A SIGIL-FP-OUTQ -j NFQUEUE --queue-num 0");
    // No destination: no outbound SYN is queued at all.
    const none = renderRules({
      inboundPorts: [],
      outboundPorts: [5432],
      outboundDestinations: [],
      queueFirst: 0,
      queueCount: 1,
      failOpen: false,
    });
    expect(none).not.toMatch(/^-A SIGIL-FP-OUT .* SYN -m multiport/m);
  });

  it("refuses a destination that is not an address", () => {
    expect(() =>
      renderRules({
        inboundPorts: [],
        outboundPorts: [5432],
        outboundDestinations: [{ address: "db.local", ports: [5432] }],
        queueFirst: 0,
        queueCount: 1,
        failOpen: false,
      }),
    ).toThrow(RuleError);
  });
});
