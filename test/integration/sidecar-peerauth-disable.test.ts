import type { AddressInfo, Server, Socket } from "node:net";
import net from "node:net";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { FlowRecord } from "../../core/flow.ts";
import type { HttpApp } from "../support/sidecar-apps.ts";
import { RawHttpConnection, rawExchange, startHttpApp } from "../support/sidecar-apps.ts";
import type { SidecarPair } from "../support/sidecar-mesh.ts";
import { TRUST_DOMAIN, policySet, startPair } from "../support/sidecar-mesh.ts";

/**
 * PeerAuthentication modes on the sidecar data path, with a real pair on loopback and a recording
 * relay on the hop between A's outbound and B's inbound: DISABLE makes A send plaintext and B decide
 * the caller as an unauthenticated peer (only address rules can match it), STRICT refuses plaintext,
 * PERMISSIVE takes both, and A's pooled plaintext connection is not reused once the directory asks
 * for mTLS.
 */

let app: HttpApp;
let pair: SidecarPair;
const relays: Relay[] = [];

/** A TCP relay in front of B's inbound listener that keeps what the caller sent on each connection. */
interface Relay {
  readonly port: number;
  /** Bytes from the caller, one buffer per accepted connection, in arrival order. */
  readonly hops: Buffer[];
  close(): Promise<void>;
}

async function startRelay(targetPort: number): Promise<Relay> {
  const hops: Buffer[] = [];
  const sockets = new Set<Socket>();
  const server: Server = net.createServer((client) => {
    const index = hops.push(Buffer.alloc(0)) - 1;
    const upstream = net.connect(targetPort, "127.0.0.1");
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on("error", () => undefined);
      s.on("close", () => sockets.delete(s));
    }
    client.on("data", (c: Buffer) => {
      hops[index] = Buffer.concat([hops[index] ?? Buffer.alloc(0), c]);
    });
    client.pipe(upstream);
    upstream.pipe(client);
    client.on("close", () => upstream.destroy());
    upstream.on("close", () => client.destroy());
  });
  const port = await new Promise<number>((resolve) =>
    server.listen(0, "127.0.0.1", () => resolve((server.address() as AddressInfo).port)),
  );
  const relay: Relay = {
    port,
    hops,
    close: () =>
      new Promise((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
  relays.push(relay);
  return relay;
}

const LABELS_ONLY = "labels-only";
const CIDR_ONLY = "cidr-only";
const EITHER = "either";

function authorization(kind: string): string {
  const from =
    kind === LABELS_ONLY
      ? `[ { matchLabels: { app: web } } ]`
      : kind === CIDR_ONLY
        ? `[ { cidrs: [ "127.0.0.0/8" ] } ]`
        : `[ { matchLabels: { app: web } }, { cidrs: [ "127.0.0.0/8" ] } ]`;
  return `
apiVersion: sigil.dev/v1
kind: AuthorizationPolicy
metadata: { name: api-${kind} }
spec:
  selector: { matchLabels: { app: api } }
  ingress:
    - action: allow
      from: ${from}
      ports: [ ${app.port} ]
`;
}

/** B's policies: one authorization rule set and the app port's peer authentication mode. */
function setB(kind: string, mode: "STRICT" | "PERMISSIVE" | "DISABLE"): void {
  pair.b.policy.update({
    policies: policySet(`${authorization(kind)}
---
apiVersion: sigil.dev/v1
kind: PeerAuthentication
metadata: { name: api-peer-auth }
spec:
  selector: { matchLabels: { app: api } }
  mode: ${mode}
`),
  });
}

/**
 * Points A's directory entry for the app port at a fresh relay (a fresh route, so no connection
 * pooled under another mode is reused) with mTLS on or off on the hop.
 */
async function routeAThroughRelay(mtls: boolean): Promise<Relay> {
  const relay = await startRelay(pair.b.sidecar.inbound.port);
  pair.a.peers.replace([
    [
      { address: "127.0.0.1", port: app.port },
      {
        identity: {
          spiffeId: pair.pki.spiffeId("api"),
          trustDomain: TRUST_DOMAIN,
          labels: { app: "api" },
        },
        sidecar: { host: "127.0.0.1", port: relay.port },
        mtls,
      },
    ],
  ]);
  return relay;
}

function viaA(path: string): Promise<{ data: string; reset: boolean }> {
  return rawExchange(
    pair.outboundPort(app.port),
    `GET ${path} HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n`,
  );
}

const TLS_HANDSHAKE_RECORD = 0x16;

function flowFor(side: "a" | "b", path: string): Promise<FlowRecord> {
  return pair[side].flows.next((r) => r.http?.path === path);
}

beforeAll(async () => {
  app = await startHttpApp();
  pair = await startPair({
    appPorts: [app.port],
    protocols: { [app.port]: "http1" },
    configB: { inbound: { host: "127.0.0.1", port: 0, plaintextAppPort: app.port } },
  });
});

afterEach(async () => {
  await Promise.all(relays.splice(0).map((r) => r.close()));
});

afterAll(async () => {
  await pair?.close();
  await app?.close();
});

describe("PeerAuthentication DISABLE on B's port", () => {
  it("carries the request in plaintext and denies it when only an identity rule could allow it", async () => {
    setB(LABELS_ONLY, "DISABLE");
    const relay = await routeAThroughRelay(false);
    const path = "/disable/labels-only";
    const res = await viaA(path);
    expect(res.data).toMatch(/^HTTP\/1\.1 403 /);
    expect(relay.hops).toHaveLength(1);
    const hop = relay.hops[0]!;
    expect(hop[0]).not.toBe(TLS_HANDSHAKE_RECORD);
    expect(hop.toString("latin1")).toMatch(new RegExp(`^GET ${path} HTTP/1\\.1\\r\\n`));
    const atB = await flowFor("b", path);
    expect(atB).toMatchObject({ direction: "ingress", verdict: "deny", encrypted: false });
    expect(atB.source.spiffeId).toBeUndefined();
    expect(atB.source.labels).toEqual({});
    expect(atB.source.address).toMatch(/127\.0\.0\.1$/);
    const atA = await flowFor("a", path);
    expect(atA).toMatchObject({ direction: "egress", encrypted: false });
    expect(app.seen.some((r) => r.url === path)).toBe(false);
  });

  it("carries the request in plaintext and allows it by the caller's address", async () => {
    setB(CIDR_ONLY, "DISABLE");
    const relay = await routeAThroughRelay(false);
    const path = "/disable/cidr";
    const res = await viaA(path);
    expect(res.data).toMatch(/^HTTP\/1\.1 200 /);
    const hop = relay.hops[0]!;
    expect(hop[0]).not.toBe(TLS_HANDSHAKE_RECORD);
    expect(hop.toString("latin1")).toMatch(new RegExp(`^GET ${path} HTTP/1\\.1\\r\\n`));
    const atB = await flowFor("b", path);
    expect(atB).toMatchObject({ direction: "ingress", verdict: "allow", encrypted: false });
    expect(atB.source.spiffeId).toBeUndefined();
    expect((await flowFor("a", path)).encrypted).toBe(false);
    expect(app.seen.some((r) => r.url === path)).toBe(true);
  });

  it("refuses a mesh (mTLS) hop to the port, since the port takes plaintext only", async () => {
    setB(EITHER, "DISABLE");
    const relay = await routeAThroughRelay(true);
    const path = "/disable/mtls-hop";
    const res = await viaA(path);
    expect(res.data).not.toMatch(/^HTTP\/1\.1 200 /);
    expect(relay.hops[0]?.[0]).toBe(TLS_HANDSHAKE_RECORD);
    const refused = await pair.b.flows.next((r) => r.reason.startsWith("mtls-disabled"));
    expect(refused).toMatchObject({ verdict: "deny", port: app.port });
    expect(app.seen.some((r) => r.url === path)).toBe(false);
  });
});

describe("PeerAuthentication STRICT on the same port", () => {
  it("refuses the plaintext hop from A before any request is decided", async () => {
    setB(EITHER, "STRICT");
    const relay = await routeAThroughRelay(false);
    const path = "/strict/plaintext-hop";
    const res = await viaA(path);
    expect(res.data).not.toMatch(/^HTTP\/1\.1 200 /);
    expect(relay.hops[0]?.toString("latin1")).toMatch(/^GET \/strict\/plaintext-hop /);
    const refused = await pair.b.flows.next(
      (r) => r.reason === `mtls-required: peer authentication is STRICT on port ${app.port}`,
    );
    expect(refused).toMatchObject({ verdict: "deny", encrypted: false });
    expect(pair.b.flows.records.some((r) => r.http?.path === path)).toBe(false);
    expect(app.seen.some((r) => r.url === path)).toBe(false);
  });

  it("refuses a plaintext client dialing B's inbound directly", async () => {
    setB(EITHER, "STRICT");
    const path = "/strict/direct";
    const res = await rawExchange(
      pair.b.sidecar.inbound.port,
      `GET ${path} HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n`,
    );
    expect(res.data).toBe("");
    expect(app.seen.some((r) => r.url === path)).toBe(false);
  });

  it("still serves the mTLS hop, with the caller's identity", async () => {
    setB(LABELS_ONLY, "STRICT");
    const relay = await routeAThroughRelay(true);
    const path = "/strict/mtls";
    expect((await viaA(path)).data).toMatch(/^HTTP\/1\.1 200 /);
    expect(relay.hops[0]?.[0]).toBe(TLS_HANDSHAKE_RECORD);
    expect(relay.hops[0]?.includes(path)).toBe(false);
    const atB = await flowFor("b", path);
    expect(atB).toMatchObject({ verdict: "allow", encrypted: true });
    expect(atB.source.spiffeId).toBe(pair.pki.spiffeId("web"));
  });
});

describe("PeerAuthentication PERMISSIVE on the same port", () => {
  it("accepts the plaintext hop as an unauthenticated peer", async () => {
    setB(EITHER, "PERMISSIVE");
    const relay = await routeAThroughRelay(false);
    const path = "/permissive/plaintext";
    expect((await viaA(path)).data).toMatch(/^HTTP\/1\.1 200 /);
    expect(relay.hops[0]?.toString("latin1")).toMatch(/^GET \/permissive\/plaintext /);
    const atB = await flowFor("b", path);
    expect(atB).toMatchObject({ verdict: "allow", encrypted: false });
    expect(atB.source.spiffeId).toBeUndefined();
  });

  it("denies the plaintext hop when only an identity rule could allow it", async () => {
    setB(LABELS_ONLY, "PERMISSIVE");
    await routeAThroughRelay(false);
    const path = "/permissive/plaintext-labels";
    expect((await viaA(path)).data).toMatch(/^HTTP\/1\.1 403 /);
    expect(await flowFor("b", path)).toMatchObject({ verdict: "deny", encrypted: false });
    expect(app.seen.some((r) => r.url === path)).toBe(false);
  });

  it("accepts the mTLS hop with the caller's identity", async () => {
    setB(LABELS_ONLY, "PERMISSIVE");
    const relay = await routeAThroughRelay(true);
    const path = "/permissive/mtls";
    expect((await viaA(path)).data).toMatch(/^HTTP\/1\.1 200 /);
    expect(relay.hops[0]?.[0]).toBe(TLS_HANDSHAKE_RECORD);
    const atB = await flowFor("b", path);
    expect(atB).toMatchObject({ verdict: "allow", encrypted: true });
    expect(atB.source.spiffeId).toBe(pair.pki.spiffeId("web"));
    expect((await flowFor("a", path)).encrypted).toBe(true);
  });
});

describe("a port's mode changing under a pooled connection", () => {
  it("stops reusing A's pooled plaintext connection once the directory asks for mTLS", async () => {
    setB(EITHER, "PERMISSIVE");
    const relay = await routeAThroughRelay(false);
    const before = "/switch/plaintext";
    const first = await RawHttpConnection.open(pair.outboundPort(app.port));
    try {
      expect((await first.request(`GET ${before} HTTP/1.1\r\nHost: api\r\n\r\n`)).status).toBe(200);
    } finally {
      first.close();
    }
    expect((await flowFor("b", before)).encrypted).toBe(false);
    const entry = pair.a.peers.lookup("127.0.0.1", app.port);
    expect(entry).not.toBeNull();
    pair.a.peers.replace([
      [
        { address: "127.0.0.1", port: app.port },
        { ...entry!, mtls: true },
      ],
    ]);
    const after = "/switch/mtls";
    const second = await RawHttpConnection.open(pair.outboundPort(app.port));
    try {
      expect((await second.request(`GET ${after} HTTP/1.1\r\nHost: api\r\n\r\n`)).status).toBe(200);
    } finally {
      second.close();
    }
    const atB = await flowFor("b", after);
    expect(atB).toMatchObject({ verdict: "allow", encrypted: true });
    expect(atB.source.spiffeId).toBe(pair.pki.spiffeId("web"));
    expect((await flowFor("a", after)).encrypted).toBe(true);
    expect(relay.hops.at(-1)?.[0]).toBe(TLS_HANDSHAKE_RECORD);
  });
});

describe("a port turning STRICT under an open plaintext connection", () => {
  it("refuses the next request on the connection, as revocation does", async () => {
    setB(CIDR_ONLY, "DISABLE");
    const conn = await RawHttpConnection.open(pair.b.sidecar.inbound.port);
    try {
      expect((await conn.request("GET /turn/one HTTP/1.1\r\nHost: api\r\n\r\n")).status).toBe(200);
      setB(CIDR_ONLY, "STRICT");
      expect((await conn.request("GET /turn/two HTTP/1.1\r\nHost: api\r\n\r\n")).status).toBe(403);
    } finally {
      conn.close();
    }
    const refused = await flowFor("b", "/turn/two");
    expect(refused.verdict).toBe("deny");
    expect(refused.reason).toMatch(/^mtls-required: peer authentication is STRICT/);
    expect(app.seen.some((r) => r.url === "/turn/two")).toBe(false);
  });
});
