import type { Campaign } from "etcd3";
import type { Logger } from "pino";
import type { EtcdState } from "./etcd-state.ts";

/**
 * Which replica runs the singleton duties (retiring CA generations): an etcd election whose
 * leadership lives on a lease. A replica whose lease is lost (it cannot reach etcd) stops being
 * leader at once and campaigns again; another replica is elected once the lease expires.
 */
export class SingletonElection {
  private campaign: Campaign | undefined;
  private leader = false;
  private retry: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(
    private readonly etcd: EtcdState,
    private readonly replicaId: string,
    private readonly log: Logger,
    private readonly leaseTtlSeconds = 5,
  ) {}

  start(): void {
    if (this.closed) return;
    const campaign = this.etcd.kv.election("singleton", this.leaseTtlSeconds).campaign(this.replicaId);
    this.campaign = campaign;
    campaign.on("elected", () => {
      this.leader = true;
      this.log.info({ replica: this.replicaId }, "elected to run singleton duties");
    });
    campaign.on("error", (err) => {
      this.leader = false;
      if (this.closed) return;
      this.log.warn({ reason: err.message }, "singleton election lost; campaigning again");
      this.retry = setTimeout(() => this.start(), 1000);
      this.retry.unref();
    });
  }

  isLeader(): boolean {
    return this.leader;
  }

  async close(): Promise<void> {
    this.closed = true;
    this.leader = false;
    if (this.retry) clearTimeout(this.retry);
    const campaign = this.campaign;
    this.campaign = undefined;
    // Resigning needs etcd; without it the lease simply expires.
    await Promise.race([campaign?.resign().catch(() => undefined), new Promise((r) => setTimeout(r, 1000))]);
  }
}
