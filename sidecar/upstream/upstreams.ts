import http2 from "node:http2";
import type { ClientHttp2Session } from "node:http2";
import net from "node:net";
import type { Socket } from "node:net";
import { ioDeadline } from "../../core/io-deadline.ts";
import type { TunnelProtocol } from "../tls/alpn.ts";
import { Http1Pool } from "./http1-pool.ts";
import type { MeshTls } from "../tls/mtls.ts";
import type { MeshDestination } from "../inputs/sources.ts";
import type { RevocationIndex } from "../../core/svid/revocation.ts";
import type { VerifiedSvid } from "../../core/svid/verify.ts";

/**
 * Where a proxied request or connection goes next, and the pooled connections that carry it there:
 * keep-alive pools for HTTP/1.1 (`http1/pool.ts`), one multiplexed session per upstream for HTTP/2, fresh sockets for opaque
 * TCP and upgrades.
 */
export type UpstreamRoute =
  /** To a mesh workload's sidecar, over mTLS (or plaintext when its port has mTLS disabled). */
  | { readonly kind: "mesh"; readonly dest: MeshDestination; readonly port: number }
  /** Straight to an address: the local application (inbound) or a destination outside the mesh. */
  | { readonly kind: "direct"; readonly host: string; readonly port: number };

export interface UpstreamOptions {
  readonly connectTimeoutMs: number;
  /** How long an idle pooled HTTP/1.1 connection to a mesh destination is kept. */
  readonly keepAliveTimeoutMs: number;
  /** How long an idle pooled HTTP/1.1 connection to a direct destination is kept. */
  readonly directIdleTimeoutMs: number;
  /** HTTP/1.1 pool size per mesh route (each connection is an mTLS handshake), idle ones included. */
  readonly meshConnectionsPerDestination: number;
  /** HTTP/1.1 pool size per direct route (the local application, a destination outside the mesh). */
  readonly directConnectionsPerDestination: number;
  /** Idle HTTP/1.1 connections kept per direct route; more are closed when returned. */
  readonly directIdleConnectionsPerDestination: number;
}

function routeKey(route: UpstreamRoute, protocol: TunnelProtocol): string {
  return route.kind === "mesh"
    ? `mesh|${route.dest.identity.spiffeId}|${route.dest.sidecar.host}|${route.dest.sidecar.port}|${route.port}|${protocol}|${route.dest.mtls ? "mtls" : "plaintext"}`
    : `direct|${route.host}|${route.port}|${protocol}`;
}

function hostForUrl(host: string): string {
  return net.isIPv6(host) ? `[${host}]` : host;
}

export class Upstreams {
  private readonly pools = new Map<string, Http1Pool>();
  private readonly sessions = new Map<string, Promise<ClientHttp2Session>>();
  /** The hop under each connected HTTP/2 session, and how to stop handing the session out. */
  private readonly sessionHops = new Map<ClientHttp2Session, { socket: Socket; forget: () => void }>();
  /**
   * The connections HTTP/2 relays opened, each owned by the relay of one downstream connection, with
   * how to retire it (no new streams on it; it ends after its last).
   */
  private readonly relayHops = new Map<Socket, () => void>();

  constructor(
    private readonly tls: MeshTls,
    private readonly options: UpstreamOptions,
  ) {}

  /** Opens one byte stream to the route, already authenticated when it is an mTLS hop. */
  async socket(route: UpstreamRoute, protocol: TunnelProtocol): Promise<Socket> {
    if (route.kind === "mesh" && route.dest.mtls) {
      return this.tls.connect(route.dest, { protocol, port: route.port }, this.options.connectTimeoutMs);
    }
    const host = route.kind === "mesh" ? route.dest.sidecar.host : route.host;
    const port = route.kind === "mesh" ? route.dest.sidecar.port : route.port;
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host, port, allowHalfOpen: true });
      socket.setNoDelay(true);
      const deadline = ioDeadline(this.options.connectTimeoutMs, () => {
        socket.destroy();
        reject(new Error(`connect to ${host}:${port} timed out after ${this.options.connectTimeoutMs} ms`));
      });
      socket.once("error", (err) => {
        deadline.cancel();
        reject(err);
      });
      socket.once("connect", () => {
        deadline.cancel();
        socket.removeAllListeners("error");
        resolve(socket);
      });
    });
  }

  /** The HTTP/1.1 connection pool for a route; a pool left without connections is forgotten. */
  http1(route: UpstreamRoute): Http1Pool {
    const key = routeKey(route, "http1");
    let pool = this.pools.get(key);
    if (!pool) {
      const { options } = this;
      const created: Http1Pool = new Http1Pool(
        () => this.socket(route, "http1"),
        route.kind === "mesh"
          ? {
              max: options.meshConnectionsPerDestination,
              maxIdle: options.meshConnectionsPerDestination,
              idleTimeoutMs: options.keepAliveTimeoutMs,
            }
          : {
              max: options.directConnectionsPerDestination,
              maxIdle: options.directIdleConnectionsPerDestination,
              idleTimeoutMs: options.directIdleTimeoutMs,
            },
        () => {
          if (this.pools.get(key) === created) this.pools.delete(key);
        },
      );
      this.pools.set(key, created);
      pool = created;
    }
    return pool;
  }

  /** Routes with an HTTP/1.1 pool or an HTTP/2 session right now (`sigil_sidecar_upstream_routes`). */
  get routes(): number {
    return this.pools.size + this.sessions.size;
  }

  /** The shared HTTP/2 session for a route, connected on first use and replaced once it closes. */
  h2(route: UpstreamRoute): Promise<ClientHttp2Session> {
    const key = routeKey(route, "h2");
    const existing = this.sessions.get(key);
    if (existing) return existing;
    const pending = this.socket(route, "h2").then((socket) => {
      const session = http2.connect(`http://${hostForUrl(socket.remoteAddress ?? "localhost")}`, {
        createConnection: () => socket,
      });
      const forget = (): void => {
        if (this.sessions.get(key) === pending) this.sessions.delete(key);
      };
      this.sessionHops.set(session, { socket, forget });
      session.once("close", () => this.sessionHops.delete(session));
      session.once("close", forget);
      session.once("goaway", forget);
      session.on("error", forget);
      return session;
    });
    pending.catch(() => this.sessions.delete(key));
    this.sessions.set(key, pending);
    return pending;
  }

  /**
   * A connection of its own for an HTTP/2 relay: cut like the others when its server's certificate
   * is revoked, and retired (`retire`) with them when this workload's identity changes.
   */
  async h2Socket(route: UpstreamRoute, retire: () => void): Promise<Socket> {
    const socket = await this.socket(route, "h2");
    this.relayHops.set(socket, retire);
    socket.once("close", () => this.relayHops.delete(socket));
    return socket;
  }

  /** What the mesh server at the other end of `socket` proved, when it is an mTLS hop opened here. */
  serverOf(socket: Socket): VerifiedSvid | undefined {
    return this.tls.serverOf(socket);
  }

  /**
   * Cuts the pooled and multiplexed mTLS connections whose server presented a certificate that
   * `revocations` now refuses (its workload, or that certificate by serial); requests on them fail,
   * and the next ones open new connections, whose handshake refuses the revoked certificate.
   */
  dropRevoked(revocations: RevocationIndex): number {
    let dropped = 0;
    const revoked = (socket: Socket): boolean => {
      const server = this.tls.serverOf(socket);
      const hit = server !== undefined && revocations.revoking(server.identity) !== undefined;
      if (hit) dropped++;
      return hit;
    };
    for (const pool of this.pools.values()) pool.destroyWhere(revoked);
    for (const socket of [...this.relayHops.keys()])
      if (revoked(socket)) {
        this.relayHops.delete(socket);
        socket.destroy();
      }
    for (const [session, hop] of [...this.sessionHops])
      if (revoked(hop.socket)) {
        this.sessionHops.delete(session);
        hop.forget();
        session.destroy();
      }
    return dropped;
  }

  async close(): Promise<void> {
    const pools = [...this.pools.values()];
    const sessions = [...this.sessions.values()];
    this.pools.clear();
    this.sessions.clear();
    for (const p of pools) p.close();
    // Retired relay connections stay listed until they close: a revocation may still cut them.
    for (const retire of this.relayHops.values()) retire();
    await Promise.allSettled([
      ...sessions.map(async (s) => {
        const session = await s;
        await new Promise<void>((resolve) => session.close(resolve));
      }),
    ]);
  }

  destroy(): void {
    for (const p of this.pools.values()) p.destroy();
    for (const socket of this.relayHops.keys()) socket.destroy();
    this.relayHops.clear();
    for (const s of this.sessions.values())
      void s.then(
        (session) => session.destroy(),
        () => undefined,
      );
    this.pools.clear();
    this.sessions.clear();
  }
}
