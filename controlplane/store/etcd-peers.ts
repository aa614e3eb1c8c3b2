import type { Lease } from "etcd3";
import type { Logger } from "pino";
import { z } from "zod";
import type { ReplicaPeer } from "../visibility/replica-flows.ts";
import type { EtcdState, WatchedPrefix } from "./etcd-state.ts";

const announcement = z.strictObject({ api: z.string().url() });

/**
 * The replicas alive right now, each found by the key it holds under `peers/<replica>` on an etcd
 * lease. A replica that dies (or loses etcd for longer than the lease) disappears when its lease
 * expires, so a request merging flows stops waiting on it; one whose lease was lost announces
 * itself again once etcd answers.
 */
export class ReplicaPeers {
  private lease: Lease | undefined;
  private api: string | undefined;
  private retry: NodeJS.Timeout | undefined;
  private closed = false;

  private constructor(
    private readonly etcd: EtcdState,
    private readonly watched: WatchedPrefix,
    private readonly replicaId: string,
    private readonly log: Logger,
    private readonly leaseTtlSeconds: number,
  ) {}

  static async open(
    etcd: EtcdState,
    replicaId: string,
    log: Logger,
    leaseTtlSeconds = 5,
  ): Promise<ReplicaPeers> {
    return new ReplicaPeers(etcd, await etcd.watchPrefix("peers/"), replicaId, log, leaseTtlSeconds);
  }

  /** Announces this replica's API at `api` for as long as it lives. */
  async announce(api: string): Promise<void> {
    this.api = announcement.parse({ api }).api;
    await this.grant();
  }

  /** The other replicas whose announcement is live, ordered by name; a malformed one is skipped and logged. */
  others(): ReplicaPeer[] {
    const peers: ReplicaPeer[] = [];
    for (const [replica, stored] of this.watched.values()) {
      if (replica === this.replicaId) continue;
      try {
        peers.push({ replica, api: announcement.parse(JSON.parse(stored.value)).api });
      } catch (err) {
        this.log.warn(
          { replica, reason: (err as Error).message },
          "replica announcement unreadable; skipped",
        );
      }
    }
    return peers.sort((a, b) => a.replica.localeCompare(b.replica));
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.retry) clearTimeout(this.retry);
    const lease = this.lease;
    this.lease = undefined;
    // Revoking needs etcd; without it the announcement simply expires with the lease.
    await Promise.race([lease?.revoke().catch(() => undefined), new Promise((r) => setTimeout(r, 1000))]);
  }

  private async grant(): Promise<void> {
    if (this.closed || this.api === undefined) return;
    const lease = this.etcd.kv.lease(this.leaseTtlSeconds);
    this.lease = lease;
    lease.on("lost", (err) => {
      if (this.closed || this.lease !== lease) return;
      this.log.warn({ reason: err.message }, "replica announcement lease lost; announcing again");
      this.again();
    });
    try {
      await lease.put(`peers/${this.replicaId}`).value(JSON.stringify({ api: this.api }));
    } catch (err) {
      if (this.closed || this.lease !== lease) return;
      this.log.warn(
        { reason: (err as Error).message },
        "announcing this replica to the others failed; retrying",
      );
      lease.release();
      this.again();
    }
  }

  private again(): void {
    if (this.retry) clearTimeout(this.retry);
    this.retry = setTimeout(() => void this.grant(), 1000);
    this.retry.unref();
  }
}
