import net from "node:net";
import type { AddressInfo, Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseSidecarConfig } from "../../sidecar/config.ts";
import { SidecarMetrics } from "../../sidecar/admin/metrics.ts";
import { MeshTls } from "../../sidecar/tls/mtls.ts";
import { CredentialHolder, PolicyHolder } from "../../sidecar/inputs/state.ts";
import type { PoolUser, UpstreamConnection } from "../../sidecar/upstream/http1-pool.ts";
import { Upstreams } from "../../sidecar/upstream/upstreams.ts";
import type { UpstreamRoute } from "../../sidecar/upstream/upstreams.ts";
import { MeshPki, TRUST_DOMAIN, quiet } from "../support/sidecar-mesh.ts";

/**
 * The HTTP/1.1 pool towards a direct destination (the local application) is bounded: at most
 * `directConnectionsPerDestination` open, and of those at most `directIdleConnectionsPerDestination`
 * kept once idle. Unbounded, a burst of 2,000 concurrent requests left 2,000 idle connections (and
 * their memory in the sidecar and the application) for the keep-alive timeout. Real sockets on
 * loopback; the application side counts what reaches it.
 */

const MAX = 3;
const MAX_IDLE = 2;

let pki: MeshPki;
let upstreams: Upstreams;
let server: net.Server;
let route: UpstreamRoute;
const accepted: Socket[] = [];

beforeAll(async () => {
  pki = await MeshPki.create();
  const metrics = new SidecarMetrics();
  const tls = new MeshTls(
    new CredentialHolder(await pki.credentials("api", { app: "api" })),
    new PolicyHolder({ trustDomain: TRUST_DOMAIN }),
    metrics,
    quiet,
  );
  upstreams = new Upstreams(tls, {
    connectTimeoutMs: 2_000,
    keepAliveTimeoutMs: 60_000,
    directIdleTimeoutMs: 4_000,
    meshConnectionsPerDestination: 64,
    directConnectionsPerDestination: MAX,
    directIdleConnectionsPerDestination: MAX_IDLE,
  });
  server = net.createServer((s) => {
    s.on("error", () => undefined);
    accepted.push(s);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  route = { kind: "direct", host: "127.0.0.1", port: (server.address() as AddressInfo).port };
});

afterAll(async () => {
  upstreams?.destroy();
  for (const s of accepted) s.destroy();
  await new Promise((resolve) => server?.close(resolve));
  await pki?.close();
});

/** A pool user that records the connection it is lent. */
function user(): { user: PoolUser; lent: Promise<UpstreamConnection>; got: () => boolean } {
  let got = false;
  let resolveLent!: (c: UpstreamConnection) => void;
  let rejectLent!: (err: Error) => void;
  const lent = new Promise<UpstreamConnection>((resolve, reject) => {
    resolveLent = resolve;
    rejectLent = reject;
  });
  return {
    user: {
      onUpstream: (c) => {
        got = true;
        resolveLent(c);
      },
      onUpstreamFailed: rejectLent,
      onUpstreamData: () => undefined,
      onUpstreamEnd: () => undefined,
      onUpstreamClose: () => undefined,
      onUpstreamDrain: () => undefined,
    },
    lent,
    got: () => got,
  };
}

const openOnServer = (): number => accepted.filter((s) => !s.destroyed && !s.readableEnded).length;

/** Waits (bounded) for the application side to see what the pool did. */
async function until(condition: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 5_000;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setImmediate(resolve));
  }
}

describe("the direct HTTP/1.1 pool", () => {
  it("defaults to 1024 connections, 64 of them kept idle", () => {
    const config = parseSidecarConfig({});
    expect(config.directConnectionsPerDestination).toBe(1024);
    expect(config.directIdleConnectionsPerDestination).toBe(64);
  });

  it("keeps an idle connection for less than node:http's 5 s keep-alive timeout, mesh hops for the keep-alive timeout", () => {
    const config = parseSidecarConfig({});
    expect(config.directIdleTimeoutMs).toBeLessThan(5_000);
    expect(config.keepAliveTimeoutMs).toBe(60_000);
    expect(upstreams.http1(route).idleTimeoutMs).toBe(4_000);
  });

  it("opens at most its bound; a further exchange waits for a returned connection", async () => {
    const pool = upstreams.http1(route);
    const first = Array.from({ length: MAX }, () => user());
    for (const u of first) pool.acquire(u.user);
    const conns = await Promise.all(first.map((u) => u.lent));
    const late = user();
    pool.acquire(late.user);
    // Every connection the pool opened has reached the application; the late exchange got none.
    await until(() => accepted.length === MAX, "the application to accept the pool's connections");
    expect(late.got()).toBe(false);
    pool.release(conns[0] as UpstreamConnection, true);
    expect(await late.lent).toBe(conns[0]);
    expect(accepted.length).toBe(MAX);
    pool.release(conns[0] as UpstreamConnection, true);
    for (const c of conns.slice(1)) pool.release(c, true);
  });

  it("keeps at most its idle bound once a burst is over and closes the rest", async () => {
    const pool = upstreams.http1(route);
    expect(pool.idleCount).toBe(MAX_IDLE);
    // The connection returned beyond the idle bound was closed, and the application saw it go.
    await until(() => openOnServer() <= MAX_IDLE, "the application to see the surplus connection close");
    expect(openOnServer()).toBe(MAX_IDLE);
    expect(accepted.length).toBe(MAX);
  });
});
