import type { Socket } from "node:net";

/**
 * Keep-alive HTTP/1.1 connections to one upstream (a mesh destination over mTLS, or the local
 * application), lent to one exchange at a time. The pool holds at most `max` connections, open or
 * opening; exchanges beyond that wait first in, first out, and one whose client left is taken out
 * of the line before it is ever sent. At most `maxIdle` connections are kept idle: one returned
 * beyond that is closed, so a burst of concurrent exchanges does not leave as many connections
 * (and their memory, on both ends) behind it. An idle connection that the upstream closes, sends
 * bytes on, or that stays idle for `idleTimeoutMs` is dropped.
 *
 * Bytes an upstream sends outside an exchange are never read as the next exchange's response: a
 * connection returned with bytes still buffered is closed instead of kept, and one that receives
 * anything while idle is closed on arrival, so the next exchange gets a fresh connection.
 */

/** The exchange a pooled connection is lent to; it receives the connection's events until release. */
export interface PoolUser {
  onUpstream(conn: UpstreamConnection): void;
  onUpstreamFailed(err: Error): void;
  onUpstreamData(chunk: Buffer): void;
  onUpstreamEnd(): void;
  /** The connection closed while lent (after `onUpstreamEnd`, if the upstream half-closed first). */
  onUpstreamClose(): void;
  onUpstreamDrain(): void;
}

export class UpstreamConnection {
  user: PoolUser | null = null;
  /** Exchanges it has been lent to, the current one included. */
  private exchanges = 0;
  private closed = false;

  private readonly onData = (chunk: Buffer): void => {
    if (this.user) this.user.onUpstreamData(chunk);
    else this.socket.destroy();
  };
  private readonly onEnd = (): void => {
    if (this.user) this.user.onUpstreamEnd();
    else this.socket.destroy();
  };
  private readonly onDrain = (): void => this.user?.onUpstreamDrain();
  private readonly onTimeout = (): void => {
    if (!this.user) this.socket.destroy();
  };
  private readonly onError = (): void => undefined;
  private readonly onClose = (): void => {
    this.closed = true;
    const user = this.user;
    this.user = null;
    this.pool.closed(this);
    user?.onUpstreamClose();
  };

  constructor(
    readonly socket: Socket,
    private readonly pool: Http1Pool,
  ) {
    // One set of listeners for the connection's whole life, whichever exchange holds it.
    socket.on("data", this.onData);
    socket.on("end", this.onEnd);
    socket.on("drain", this.onDrain);
    socket.on("timeout", this.onTimeout);
    socket.on("error", this.onError);
    socket.on("close", this.onClose);
    socket.setTimeout(pool.idleTimeoutMs);
  }

  /** Hands it to the exchange `user` (called by the pool). */
  lendTo(user: PoolUser): void {
    this.user = user;
    this.exchanges++;
    user.onUpstream(this);
  }

  /**
   * It carried an exchange before the current one: the upstream may have closed it while it sat
   * idle, so a failure before any response byte may be that close crossing the request.
   */
  get reused(): boolean {
    return this.exchanges > 1;
  }

  get usable(): boolean {
    return !this.closed && !this.socket.destroyed && this.socket.writable;
  }

  /** Whether it can serve another exchange: open, and nothing received that no exchange asked for. */
  get reusable(): boolean {
    return this.usable && this.socket.readableLength === 0;
  }

  /**
   * Takes the lent connection out of the pool for good (it switched protocols): the pool forgets
   * it and its listeners and idle timeout are removed, so the caller alone owns the socket.
   */
  detach(): Socket {
    const s = this.socket;
    s.off("data", this.onData);
    s.off("end", this.onEnd);
    s.off("drain", this.onDrain);
    s.off("timeout", this.onTimeout);
    s.off("error", this.onError);
    s.off("close", this.onClose);
    s.setTimeout(0);
    this.user = null;
    this.closed = true;
    this.pool.closed(this);
    return s;
  }
}

export interface Http1PoolLimits {
  /** Connections open or being opened. */
  readonly max: number;
  /** Connections kept while no exchange needs them. */
  readonly maxIdle: number;
  readonly idleTimeoutMs: number;
}

export class Http1Pool {
  private readonly idle: UpstreamConnection[] = [];
  private readonly waiting: PoolUser[] = [];
  /** Connections open or being opened. */
  private open = 0;
  private dialing = 0;
  private shut = false;
  private emptied = false;
  private readonly all = new Set<UpstreamConnection>();

  /** `onEmpty` runs once, when the pool's last connection is gone and nobody waits for one. */
  constructor(
    private readonly connect: () => Promise<Socket>,
    private readonly limits: Http1PoolLimits,
    private readonly onEmpty: () => void = () => undefined,
  ) {}

  get idleTimeoutMs(): number {
    return this.limits.idleTimeoutMs;
  }

  /** Connections kept idle right now. */
  get idleCount(): number {
    return this.idle.length;
  }

  /**
   * Emptied pools are forgotten by their owner (so routes no longer used cost nothing); a holder of
   * one asks its owner for the route's pool again rather than use it.
   */
  get retired(): boolean {
    return this.emptied;
  }

  /** Lends `user` a connection now (synchronously, if one is idle) or once one is free. */
  acquire(user: PoolUser): void {
    if (this.shut) {
      user.onUpstreamFailed(new Error("upstream pool closed"));
      return;
    }
    for (let conn = this.idle.pop(); conn !== undefined; conn = this.idle.pop()) {
      if (!conn.reusable) {
        conn.socket.destroy();
        continue;
      }
      conn.lendTo(user);
      return;
    }
    this.waiting.push(user);
    this.redial();
  }

  /** Takes a waiting user out of the line (its client left). */
  cancel(user: PoolUser): void {
    const i = this.waiting.indexOf(user);
    if (i >= 0) this.waiting.splice(i, 1);
  }

  /**
   * Returns a lent connection: kept for the next exchange when `reusable`, else closed. `idleMs`,
   * when the upstream said how long it keeps the connection idle, shortens the pool's idle timeout.
   */
  release(conn: UpstreamConnection, reusable: boolean, idleMs: number | null = null): void {
    conn.user = null;
    if (!reusable || this.shut || !conn.reusable) {
      conn.socket.destroy();
      return;
    }
    // The socket's idle timer is restarted by every read and write, so it needs setting only when
    // the upstream's hint changes it: each setTimeout call makes a new timer object.
    const timeoutMs = idleMs === null ? this.idleTimeoutMs : Math.min(idleMs, this.idleTimeoutMs);
    if (conn.socket.timeout !== timeoutMs) conn.socket.setTimeout(timeoutMs);
    // An exchange may have paused it (a slow client): idle, it must read, so that whatever arrives
    // closes it at once rather than waiting for the next exchange.
    conn.socket.resume();
    this.give(conn);
  }

  private dial(): void {
    this.open++;
    this.dialing++;
    this.connect().then(
      (socket) => {
        this.dialing--;
        if (this.shut) {
          this.open--;
          socket.destroy();
          return;
        }
        const conn = new UpstreamConnection(socket, this);
        this.all.add(conn);
        this.give(conn);
      },
      (err: Error) => {
        this.dialing--;
        this.open--;
        this.waiting.shift()?.onUpstreamFailed(err);
        this.redial();
        this.retireIfEmpty();
      },
    );
  }

  private give(conn: UpstreamConnection): void {
    const user = this.waiting.shift();
    if (user) {
      conn.lendTo(user);
    } else if (this.idle.length < this.limits.maxIdle) {
      this.idle.push(conn);
    } else {
      conn.socket.destroy();
    }
  }

  /** Called by a connection once its socket closed. */
  closed(conn: UpstreamConnection): void {
    this.open--;
    this.all.delete(conn);
    const i = this.idle.indexOf(conn);
    if (i >= 0) this.idle.splice(i, 1);
    this.redial();
    this.retireIfEmpty();
  }

  private retireIfEmpty(): void {
    if (this.emptied || this.shut || this.open > 0 || this.waiting.length > 0) return;
    this.emptied = true;
    this.onEmpty();
  }

  /** Opens a connection for each waiting user no connection being opened will serve, up to `max`. */
  private redial(): void {
    while (!this.shut && this.waiting.length > this.dialing && this.open < this.limits.max) this.dial();
  }

  /** No new exchanges; idle connections close now, lent ones when they are returned. */
  close(): void {
    this.shut = true;
    for (const user of this.waiting.splice(0)) user.onUpstreamFailed(new Error("upstream pool closed"));
    for (const conn of this.idle.splice(0)) conn.socket.destroy();
  }

  /** Cuts every connection, idle or lent, whose socket `test` picks; the pool stays open. */
  destroyWhere(test: (socket: Socket) => boolean): void {
    for (const conn of [...this.all]) if (test(conn.socket)) conn.socket.destroy();
  }

  /** As `close`, and lent connections are cut too. */
  destroy(): void {
    this.close();
    for (const conn of this.all) conn.socket.destroy();
  }
}
