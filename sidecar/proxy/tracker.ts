import type { Socket } from "node:net";
import type { SidecarMetrics } from "../admin/metrics.ts";

/** Told of every connection opened and closed (after the tracker counted it). */
export interface ConnectionObserver {
  opened(): void;
  closed(): void;
}

/** Every open downstream connection, for the active-connections gauge and for draining. */
export class ConnectionTracker {
  private readonly open = new Set<Socket>();
  private waiters: (() => void)[] = [];

  constructor(
    private readonly metrics: SidecarMetrics,
    private readonly observer?: ConnectionObserver,
  ) {}

  add(socket: Socket, direction: "ingress" | "egress"): void {
    this.open.add(socket);
    this.metrics.activeConnections.inc({ direction });
    this.observer?.opened();
    socket.once("close", () => {
      this.open.delete(socket);
      this.metrics.activeConnections.dec({ direction });
      this.observer?.closed();
      if (this.open.size === 0) {
        const waiters = this.waiters;
        this.waiters = [];
        for (const w of waiters) w();
      }
    });
  }

  get size(): number {
    return this.open.size;
  }

  /** Resolves true when every connection closed within `timeoutMs`, false when some had to be cut. */
  idle(timeoutMs: number): Promise<boolean> {
    if (this.open.size === 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== done);
        resolve(false);
      }, timeoutMs);
      const done = (): void => {
        clearTimeout(timer);
        resolve(true);
      };
      this.waiters.push(done);
    });
  }

  /** Cuts every connection with a reset, so peers see an abort rather than a clean end. */
  destroyAll(): void {
    for (const s of this.open) {
      if (s.destroyed) continue;
      s.resetAndDestroy();
    }
  }
}
