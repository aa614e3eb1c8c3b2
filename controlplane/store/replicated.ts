import { randomBytes } from "node:crypto";
import type { Logger } from "pino";
import type { SharedIdentityState } from "../identity/plane.ts";
import { EtcdCaStorage } from "./etcd-ca.ts";
import { EtcdJoinTokens } from "./etcd-join-tokens.ts";
import { EtcdModeSettings } from "./etcd-modes.ts";
import { EtcdPolicies } from "./etcd-policies.ts";
import { EtcdRegistrations } from "./etcd-registrations.ts";
import { EtcdRegistryPersistence } from "./etcd-registry.ts";
import { EtcdLockFailedError } from "etcd3";
import { EtcdState } from "./etcd-state.ts";
import { loadEnvelopeKey, type EnvelopeKeySource } from "./envelope.ts";
import { SingletonElection } from "./leader.ts";
import { ReplicaPeers } from "./etcd-peers.ts";

/** How a replica reaches the shared state. */
export interface ReplicationConfig {
  /** Client URLs of the etcd members. */
  readonly etcdEndpoints: readonly string[];
  readonly envelopeKey: EnvelopeKeySource;
  /** Key prefix in etcd (default `/sigil/`). */
  readonly prefix?: string;
  /** This replica's name in the election (default: random). */
  readonly replicaId?: string;
  readonly callTimeoutMs?: number;
}

/** Every piece of shared configuration state of a replica, loaded from etcd and watched. */
export interface ReplicatedState {
  readonly etcd: EtcdState;
  readonly identity: SharedIdentityState;
  readonly modes: EtcdModeSettings;
  readonly policies: EtcdPolicies;
  readonly registrations: EtcdRegistrations;
  readonly election: SingletonElection;
  /** The other live replicas' API addresses, and this one's announcement. */
  readonly peers: ReplicaPeers;
  /** Runs `fn` holding the cluster-wide bootstrap lock, so the first start creates the CA exactly once. */
  bootstrap<T>(fn: () => Promise<T>): Promise<T>;
  close(): Promise<void>;
}

export async function openReplicatedState(config: ReplicationConfig, log: Logger): Promise<ReplicatedState> {
  const envelopeKey = await loadEnvelopeKey(config.envelopeKey);
  const etcd = await EtcdState.connect({
    endpoints: config.etcdEndpoints,
    prefix: config.prefix,
    callTimeoutMs: config.callTimeoutMs,
    log,
  });
  try {
    const caStorage = await EtcdCaStorage.open(etcd, envelopeKey);
    const registry = await EtcdRegistryPersistence.open(etcd);
    const replicaId = config.replicaId ?? randomBytes(6).toString("hex");
    const election = new SingletonElection(etcd, replicaId, log);
    const identity: SharedIdentityState = {
      caStorage,
      tokens: new EtcdJoinTokens(etcd),
      registry,
      attach: (ca, reg) => {
        caStorage.attach(ca, (err) =>
          log.error({ err }, "loading the CA changed through another replica failed"),
        );
        registry.attach(reg);
      },
      isLeader: () => election.isLeader(),
    };
    const state: ReplicatedState = {
      etcd,
      identity,
      modes: await EtcdModeSettings.open(etcd),
      policies: await EtcdPolicies.open(etcd),
      registrations: await EtcdRegistrations.open(etcd, log),
      election,
      peers: await ReplicaPeers.open(etcd, replicaId, log),
      bootstrap: (fn) => underLock(etcd, "locks/bootstrap", fn),
      close: async () => {
        await state.peers.close();
        await election.close();
        etcd.close();
      },
    };
    election.start();
    return state;
  } catch (err) {
    etcd.close();
    throw err;
  }
}

/**
 * Runs `fn` holding an etcd lock, waiting (bounded) while another replica holds it: etcd3's lock
 * is a try-lock, so a replica starting beside another retries with jitter instead of failing.
 */
async function underLock<T>(etcd: EtcdState, key: string, fn: () => Promise<T>, waitMs = 60_000): Promise<T> {
  const deadline = Date.now() + waitMs;
  for (;;) {
    const lock = etcd.kv.lock(key).ttl(30);
    try {
      await lock.acquire();
    } catch (err) {
      if (!(err instanceof EtcdLockFailedError) || Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 100 + Math.random() * 200));
      continue;
    }
    try {
      return await fn();
    } finally {
      await lock.release().catch(() => undefined);
    }
  }
}
