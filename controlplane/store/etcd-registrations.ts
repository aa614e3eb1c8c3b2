import type { Logger } from "pino";
import { z } from "zod";
import { registrationFromMetadata, registrationMetadata } from "../../core/registration.ts";
import type { RegistrationBook, RegistrationRecord } from "../mesh/mesh.ts";
import type { EtcdState, WatchedPrefix } from "./etcd-state.ts";

const PREFIX = "registrations/";

/** A registration as stored: the sidecar's node metadata, the address its stream came from, its order. */
const storedRegistrationSchema = z.object({
  metadata: z.record(z.string(), z.unknown()),
  observed: z.string().nullable(),
  order: z.number().int().nonnegative(),
});
type StoredRegistration = z.infer<typeof storedRegistrationSchema>;

/**
 * Workload registrations (addresses and ports a sidecar announces when its stream opens) shared
 * through etcd, so every replica's peer directory lists every workload whichever replica its
 * sidecar is on. A registration is taken locally at once; storing it is best effort (a replica
 * without etcd still serves its own sidecars, and the sidecar registers again on its next stream).
 */
export class EtcdRegistrations implements RegistrationBook {
  private readonly local = new Map<string, RegistrationRecord>();

  private constructor(
    private readonly etcd: EtcdState,
    private readonly watched: WatchedPrefix,
    private readonly log: Logger,
  ) {
    for (const [key, v] of watched.values()) this.take(key, v.value);
    watched.on("change", (key, value) => {
      if (value === undefined) this.local.delete(key);
      else this.take(key, value);
    });
  }

  static async open(etcd: EtcdState, log: Logger): Promise<EtcdRegistrations> {
    return new EtcdRegistrations(etcd, await etcd.watchPrefix(PREFIX), log);
  }

  get(spiffeId: string): RegistrationRecord | undefined {
    return this.local.get(spiffeId);
  }

  set(spiffeId: string, record: RegistrationRecord): void {
    this.local.set(spiffeId, record);
    const stored: StoredRegistration = {
      metadata: registrationMetadata(record.registration),
      observed: record.observed ?? null,
      order: record.order,
    };
    this.etcd
      .put(PREFIX + spiffeId, JSON.stringify(stored), `registering ${spiffeId}`)
      .catch((err: unknown) => this.log.warn({ err, spiffeId }, "registration kept on this replica only"));
  }

  onChange(listener: () => void): () => void {
    this.watched.on("change", listener);
    return () => this.watched.off("change", listener);
  }

  /** A stored registration is checked as the node metadata it came from; a bad one is logged, never served. */
  private take(key: string, value: string): void {
    try {
      const stored = storedRegistrationSchema.parse(JSON.parse(value));
      const registration = registrationFromMetadata(stored.metadata);
      if (registration)
        this.local.set(key, { registration, observed: stored.observed ?? undefined, order: stored.order });
    } catch (err) {
      this.log.warn({ key: PREFIX + key, reason: (err as Error).message }, "stored registration refused");
    }
  }
}
