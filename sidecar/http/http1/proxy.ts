import type { Socket } from "node:net";
import type { Logger } from "pino";
import type { Authorizer } from "../../authz/authorize.ts";
import type { ProxiedConnection } from "../../upstream/proxied-connection.ts";
import type { ClientConnection, Http1Context, Http1Options } from "./exchange.ts";
import { Http1Connection } from "./connection.ts";
import type { Upstreams } from "../../upstream/upstreams.ts";

export type { Http1Options } from "./exchange.ts";

/**
 * HTTP/1.1 proxying with Sigil's own strict framing (`http1/`): each request head is parsed and
 * refused with 400 and a close on anything two parsers could read differently, decided on its own
 * against the policy current at that moment, and allowed requests are relayed with the normalized
 * path over pooled upstream connections, bodies forwarded as raw bytes with their boundaries
 * tracked exactly. No byte after a framing doubt is ever interpreted.
 */
export class Http1Proxy implements Http1Context {
  private readonly connections = new Set<ClientConnection>();
  private timer: NodeJS.Timeout | null = null;
  private drainRequested = false;

  constructor(
    readonly authorizer: Authorizer,
    readonly upstreams: Upstreams,
    readonly options: Http1Options,
    readonly log: Logger,
  ) {}

  get draining(): boolean {
    return this.drainRequested;
  }

  /** Takes over a connection whose first bytes (`head`, possibly empty) were already read. */
  accept(socket: Socket, conn: ProxiedConnection, head: Buffer): void {
    const connection = new Http1Connection(socket, conn, this);
    this.connections.add(connection);
    this.watch();
    connection.start(head);
  }

  /** Stop keeping connections alive: idle ones close now, busy ones after their current response. */
  drain(): void {
    this.drainRequested = true;
    for (const c of this.connections) if (c.idle) c.close();
  }

  forget(conn: ClientConnection): void {
    this.connections.delete(conn);
    if (this.connections.size === 0 && this.timer !== null) {
      clearInterval(this.timer);
      this.timer = null;
    }
  }

  /** One timer for all connections enforces the head and keep-alive timeouts while any are open. */
  private watch(): void {
    if (this.timer !== null) return;
    const { headersTimeoutMs, keepAliveTimeoutMs } = this.options;
    const period = Math.min(1000, Math.max(10, Math.min(headersTimeoutMs, keepAliveTimeoutMs) / 4));
    this.timer = setInterval(() => {
      const now = Date.now();
      for (const c of this.connections) c.expire(now);
    }, period);
    this.timer.unref();
  }
}
