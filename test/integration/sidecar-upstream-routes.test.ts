import net from "node:net";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { PoolUser, UpstreamConnection } from "../../sidecar/upstream/http1-pool.ts";
import { SidecarMetrics } from "../../sidecar/admin/metrics.ts";
import { MeshTls } from "../../sidecar/tls/mtls.ts";
import { CredentialHolder, PolicyHolder } from "../../sidecar/inputs/state.ts";
import { Upstreams } from "../../sidecar/upstream/upstreams.ts";
import type { UpstreamRoute } from "../../sidecar/upstream/upstreams.ts";
import { MeshPki, TRUST_DOMAIN, quiet } from "../support/sidecar-mesh.ts";

/**
 * Upstream HTTP/1.1 pools are kept only while their route has connections: a sidecar whose workload
 * calls many destinations once each (egress to many hosts) must not keep a pool per destination
 * for ever. Real sockets to real listeners on loopback.
 */

const ROUTES = 12;

let pki: MeshPki;
let upstreams: Upstreams;
let metrics: SidecarMetrics;
const servers: net.Server[] = [];
const routes: UpstreamRoute[] = [];

beforeAll(async () => {
  pki = await MeshPki.create();
  metrics = new SidecarMetrics();
  const tls = new MeshTls(
    new CredentialHolder(await pki.credentials("web", { app: "web" })),
    new PolicyHolder({ trustDomain: TRUST_DOMAIN }),
    metrics,
    quiet,
  );
  upstreams = new Upstreams(tls, {
    connectTimeoutMs: 2_000,
    keepAliveTimeoutMs: 60_000,
    directIdleTimeoutMs: 4_000,
    meshConnectionsPerDestination: 4,
    directConnectionsPerDestination: 1024,
    directIdleConnectionsPerDestination: 64,
  });
  metrics.watchUpstreamRoutes(() => upstreams.routes);
  for (let i = 0; i < ROUTES; i++) {
    const server = net.createServer((s) => s.on("error", () => undefined));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    servers.push(server);
    routes.push({ kind: "direct", host: "127.0.0.1", port: (server.address() as AddressInfo).port });
  }
});

afterAll(async () => {
  upstreams?.destroy();
  await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
  await pki?.close();
});

/** Borrows one connection from the route's pool; resolves with it. */
function borrow(route: UpstreamRoute): Promise<UpstreamConnection> {
  return new Promise((resolve, reject) => {
    const user: PoolUser = {
      onUpstream: resolve,
      onUpstreamFailed: reject,
      onUpstreamData: () => undefined,
      onUpstreamEnd: () => undefined,
      onUpstreamClose: () => undefined,
      onUpstreamDrain: () => undefined,
    };
    upstreams.http1(route).acquire(user);
  });
}

/** Returns a connection as not reusable and waits until its socket has closed. */
async function giveBackClosed(route: UpstreamRoute, conn: UpstreamConnection): Promise<void> {
  const closed = new Promise((resolve) => conn.socket.once("close", resolve));
  upstreams.http1(route).release(conn, false);
  await closed;
}

async function routesGauge(): Promise<string> {
  return metrics.registry.getSingleMetricAsString("sigil_sidecar_upstream_routes");
}

describe("upstream routes", () => {
  it("forgets a route's pool once its last connection is gone, and the gauge follows", async () => {
    const borrowed = await Promise.all(routes.map((r) => borrow(r)));
    expect(upstreams.routes).toBe(ROUTES);
    expect(await routesGauge()).toContain(`sigil_sidecar_upstream_routes ${ROUTES}`);
    const pools = routes.map((r) => upstreams.http1(r));
    for (const [i, conn] of borrowed.entries()) await giveBackClosed(routes[i] as UpstreamRoute, conn);
    expect(upstreams.routes).toBe(0);
    expect(pools.every((p) => p.retired)).toBe(true);
    expect(await routesGauge()).toContain("sigil_sidecar_upstream_routes 0");
  });

  it("gives a route a fresh pool after its old one retired, which still carries connections", async () => {
    const route = routes[0] as UpstreamRoute;
    const first = await borrow(route);
    const old = upstreams.http1(route);
    await giveBackClosed(route, first);
    expect(old.retired).toBe(true);
    const again = await borrow(route);
    expect(upstreams.http1(route)).not.toBe(old);
    expect(again.usable).toBe(true);
    await giveBackClosed(route, again);
  });

  it("keeps a pool while a connection is idle in it or an exchange waits for one", async () => {
    const route = routes[1] as UpstreamRoute;
    const conn = await borrow(route);
    upstreams.http1(route).release(conn, true);
    expect(upstreams.routes).toBe(1);
    expect(upstreams.http1(route).retired).toBe(false);
    const closed = new Promise((resolve) => conn.socket.once("close", resolve));
    conn.socket.destroy();
    await closed;
    expect(upstreams.routes).toBe(0);
  });
});
