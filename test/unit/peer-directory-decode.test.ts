import { describe, expect, it } from "vitest";
import { PeerDirectoryResourceError, decodePeerDirectory } from "../../sidecar/agent/peer-directory.ts";

/**
 * A sidecar applies what it can of a PeerDirectory: a bad workload entry, or an address:port given
 * to two identities, is left out and named; the rest is learned. Before, one such entry made the
 * sidecar NACK the whole resource and learn nothing new until the control plane changed it.
 */

const OPTIONS = { trustDomain: "sigil.local", sidecarPort: 15006 };

function workload(name: string, addresses: string[], ports: number[]) {
  return {
    name,
    spiffe_id: `spiffe://sigil.local/workload/${name}`,
    addresses,
    ports: ports.map((port) => ({ port })),
  };
}

const owners = (entries: ReturnType<typeof decodePeerDirectory>["entries"]) =>
  entries.map(([k, d]) => `${k.address}:${k.port}=${d.identity.spiffeId.split("/").pop()}`).sort();

describe("decodePeerDirectory keeps what is sound", () => {
  it("leaves out an address:port claimed by two identities, for both, and keeps everything else", () => {
    const { entries, rejected } = decodePeerDirectory(
      {
        name: "mesh",
        workloads: [
          workload("db", ["198.18.0.20"], [5432]),
          workload("rogue", ["198.18.0.20", "198.18.0.21"], [5432]),
          workload("web", ["198.18.0.30"], [8080]),
        ],
      },
      OPTIONS,
    );
    expect(owners(entries)).toEqual(["198.18.0.21:5432=rogue", "198.18.0.30:8080=web"]);
    expect(rejected).toEqual([
      'PeerDirectory "mesh": 198.18.0.20:5432 is claimed by spiffe://sigil.local/workload/db and spiffe://sigil.local/workload/rogue; left out for all of them',
    ]);
  });

  it("leaves out one malformed workload entry, naming its field, and keeps the others", () => {
    const { entries, rejected } = decodePeerDirectory(
      {
        name: "mesh",
        workloads: [
          { ...workload("bad-ip", ["not-an-ip"], [1]) },
          { ...workload("other-domain", ["198.18.0.5"], [1]), spiffe_id: "spiffe://elsewhere/workload/x" },
          { name: "bad-port", spiffe_id: "spiffe://sigil.local/workload/p", ports: [{ port: 70000 }] },
          workload("web", ["198.18.0.30"], [8080]),
        ],
      },
      OPTIONS,
    );
    expect(owners(entries)).toEqual(["198.18.0.30:8080=web"]);
    expect(rejected).toHaveLength(3);
    expect(rejected[0]).toMatch(/workloads\[0\]\.addresses\[0\]: not an IP address: not-an-ip/);
    expect(rejected[1]).toMatch(/workloads\[1\]\.spiffe_id: .* outside trust domain sigil\.local/);
    expect(rejected[2]).toMatch(/workloads\[2\]\.ports\.0\.port/);
  });

  it("gives every workload's labels by SPIFFE ID, one that serves no port or lost a disputed address included", () => {
    const { labels } = decodePeerDirectory(
      {
        name: "mesh",
        workloads: [
          { ...workload("web", [], []), labels: { app: "web", "vuln.critical": "3" } },
          { ...workload("db", ["198.18.0.20"], [5432]), labels: { app: "db" } },
          { ...workload("rogue", ["198.18.0.20"], [5432]), labels: { app: "rogue" } },
        ],
      },
      OPTIONS,
    );
    expect(labels.labelsOf("spiffe://sigil.local/workload/web")).toEqual({
      app: "web",
      "vuln.critical": "3",
    });
    expect(labels.labelsOf("spiffe://sigil.local/workload/db")).toEqual({ app: "db" });
    expect(labels.labelsOf("spiffe://sigil.local/workload/rogue")).toEqual({ app: "rogue" });
    expect(labels.size).toBe(3);
  });

  it("still refuses a resource that is not a directory at all", () => {
    expect(() => decodePeerDirectory({ workloads: "x" }, OPTIONS)).toThrow(PeerDirectoryResourceError);
  });
});
