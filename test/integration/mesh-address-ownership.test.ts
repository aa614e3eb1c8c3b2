import { afterAll, beforeAll, describe, expect, it } from "vitest";
import * as grpc from "@grpc/grpc-js";
import { registrationMetadata, type Registration } from "../../core/registration.ts";
import { decodePeerDirectory, type DirectoryEntry } from "../../sidecar/agent/peer-directory.ts";
import { XdsClient, type DecodedResource } from "../../xds/client.ts";
import { PEER_DIRECTORY } from "../../xds/type-urls.ts";
import { attestWithJoinToken, startTestControlPlane } from "../support/control-plane.ts";
import type { Closer, TestControlPlane } from "../support/control-plane.ts";

/**
 * A workload with no policy rights tries to take addresses over the peer directory: another
 * workload's address and port (which made every sidecar NACK the whole directory, freezing it), and
 * an address outside the mesh (which made callers take an external database for the claimant). The
 * control plane decides who owns each address:port — attested by the operator (the join token's
 * addresses), then observed (the address the sidecar's ADS stream comes from), then the first
 * claimant — publishes no conflict, publishes no address nobody vouched for, and reports each
 * refused claim in the API. Real control plane, real gRPC/TLS streams, the sidecar's own decoder.
 */

let plane: TestControlPlane;
const closers: Closer[] = [];

async function api<T>(method: string, path: string, body?: unknown): Promise<T> {
  const { cp } = plane;
  const res = await fetch(`http://127.0.0.1:${cp.httpPort}${path}`, {
    method,
    headers: { authorization: `Bearer ${cp.httpAuth.token}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = (await res.json()) as T;
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${JSON.stringify(json)}`);
  return json;
}

interface SimSidecar {
  readonly spiffeId: string;
  /** The latest PeerDirectory resources this sidecar was sent. */
  directory(): DecodedResource[];
}

/** Attests with a join token (addresses registered on it, if any) and registers over ADS/TLS. */
async function startSidecar(
  name: string,
  registration: Registration,
  attestedAddresses: string[] = [],
): Promise<SimSidecar> {
  const { token } = await api<{ token: string }>("POST", "/api/tokens", {
    name,
    labels: { app: name },
    ttlSeconds: 600,
    ...(attestedAddresses.length > 0 ? { addresses: attestedAddresses } : {}),
  });
  const rotation = await attestWithJoinToken(plane, token, closers);
  const creds = rotation.current();
  const client = new XdsClient({
    target: plane.grpcTarget,
    credentials: grpc.credentials.createSsl(
      Buffer.from(plane.caPem),
      Buffer.from(creds.privateKeyPem),
      Buffer.from(creds.certChainPem),
    ),
    channelOptions: { "grpc.ssl_target_name_override": "localhost" },
    node: { id: creds.spiffeId, metadata: registrationMetadata(registration) },
    protocol: "sotw",
    registry: plane.cp.xds.registry,
  });
  closers.push(() => client.close());
  let latest: DecodedResource[] = [];
  client.subscribe(PEER_DIRECTORY, { handler: (u) => void (latest = [...u.resources.values()]) });
  client.start();
  await new Promise<void>((resolve) => client.once("ack", () => resolve()));
  return { spiffeId: creds.spiffeId, directory: () => latest };
}

/** The directory as a sidecar applies it: `address:port` → owner, and what it had to reject. */
function applied(s: SimSidecar): { owners: Map<string, string>; rejected: string[] } {
  const owners = new Map<string, string>();
  const rejected: string[] = [];
  for (const r of s.directory()) {
    const decoded = decodePeerDirectory(r.message, { trustDomain: "sigil.local", sidecarPort: 15006 });
    rejected.push(...decoded.rejected);
    for (const [key, dest] of decoded.entries as DirectoryEntry[])
      owners.set(`${key.address}:${key.port}`, dest.identity.spiffeId);
  }
  return { owners, rejected };
}

function reg(addresses: string[], appPorts: number[]): Registration {
  return { addresses, appPorts, fastPathPorts: [], inboundPort: 15006 };
}

/** Waits (bounded) until the sidecar's directory satisfies `check`, re-reading on every update. */
async function eventually(s: SimSidecar, check: (owners: Map<string, string>) => boolean): Promise<void> {
  const deadline = Date.now() + 5_000;
  while (!check(applied(s).owners)) {
    if (Date.now() > deadline)
      throw new Error(`directory never converged: ${JSON.stringify([...applied(s).owners])}`);
    await new Promise((resolve) => setImmediate(resolve));
  }
}

const ID = (name: string) => `spiffe://sigil.local/workload/${name}`;

let db: SimSidecar;
let web: SimSidecar;

beforeAll(async () => {
  plane = await startTestControlPlane("sg-addr-", {}, undefined, { addressClaims: "evidence" });
  // The operator registered the database VM's address on its join token.
  db = await startSidecar("db", reg(["198.18.0.20"], [5432]), ["198.18.0.20"]);
  // A workload that claims db's address and port, an address outside the mesh, and its own loopback.
  await startSidecar("rogue", reg(["198.18.0.20", "198.18.0.99", "127.0.0.1"], [5432, 7000]));
  // A workload that arrives after the attack.
  web = await startSidecar("web", reg(["127.0.0.1"], [8000]));
}, 60_000);

afterAll(async () => {
  for (const c of closers.splice(0).reverse()) await c();
  await plane?.close();
});

describe("address ownership decided at the control plane", () => {
  it("the directory a sidecar receives applies whole: no address:port claimed twice", async () => {
    await eventually(web, (o) => o.get("127.0.0.1:8000") === ID("web"));
    const { owners, rejected } = applied(web);
    expect(rejected).toEqual([]);
    expect(owners.get("198.18.0.20:5432")).toBe(ID("db"));
  });

  it("a workload registering after the attack still reaches every sidecar (the directory is not frozen)", async () => {
    await eventually(db, (o) => o.get("127.0.0.1:8000") === ID("web"));
  });

  it("an address nobody vouched for is never published (no caller takes an external host for the claimant)", () => {
    const { owners } = applied(web);
    expect([...owners.keys()].filter((k) => k.startsWith("198.18.0.99:"))).toEqual([]);
  });

  it("the address the claimant's stream comes from is published as observed", () => {
    expect(applied(web).owners.get("127.0.0.1:7000")).toBe(ID("rogue"));
  });

  it("reports each refused claim in the API, naming the claimant, the owner and why", async () => {
    const { conflicts } = await api<{ conflicts: Record<string, unknown>[] }>(
      "GET",
      "/api/mesh/address-conflicts",
    );
    expect(conflicts).toEqual(
      expect.arrayContaining([
        expect.objectContaining({
          address: "198.18.0.20",
          port: null,
          claimant: ID("rogue"),
          owner: ID("db"),
          reason: expect.stringMatching(/attested/),
        }),
        expect.objectContaining({
          address: "198.18.0.99",
          claimant: ID("rogue"),
          owner: null,
          reason: expect.stringMatching(/neither attested nor observed/),
        }),
      ]),
    );
  });

  it("between two observed claimants, the first keeps the address:port and the second is reported", async () => {
    await startSidecar("late", reg(["127.0.0.1"], [8000]));
    const { conflicts } = await api<{ conflicts: Record<string, unknown>[] }>(
      "GET",
      "/api/mesh/address-conflicts",
    );
    expect(conflicts).toContainEqual(
      expect.objectContaining({ address: "127.0.0.1", port: 8000, claimant: ID("late"), owner: ID("web") }),
    );
    const { owners, rejected } = applied(web);
    expect(rejected).toEqual([]);
    expect(owners.get("127.0.0.1:8000")).toBe(ID("web"));
  });
});
