import { setTimeout as sleep } from "node:timers/promises";
import type { Pod } from "kubernetes-types/core/v1.js";
import type { Status, WatchEvent } from "kubernetes-types/meta/v1.js";
import type { Logger } from "pino";
import type { KubeApiClient } from "./kube-api.ts";
import { KubeApiError } from "./kube-api.ts";
import type { PodFacts } from "./pod-labels.ts";
import { PodShapeError, podFacts } from "./pod-labels.ts";

/** Delays between failed list/watch attempts: doubling from `initialMs`, never above `maxMs`. */
export interface Backoff {
  readonly initialMs: number;
  readonly maxMs: number;
}

export const DEFAULT_BACKOFF: Backoff = { initialMs: 500, maxMs: 30_000 };

/** The delay before retry number `attempt` (0-based). */
export function backoffDelay(backoff: Backoff, attempt: number): number {
  return Math.min(backoff.maxMs, backoff.initialMs * 2 ** Math.min(attempt, 30));
}

export interface PodWatchOptions {
  readonly api: KubeApiClient;
  readonly namespace: string;
  /** Called with the service accounts whose set of pods or their labels changed. */
  readonly onChange: (serviceAccounts: ReadonlySet<string>) => void;
  /** Every pod of the namespace was just listed (first, or again after 410 Gone). */
  readonly onListed?: () => void;
  readonly backoff?: Backoff;
  readonly log?: Logger;
}

function changed(a: PodFacts | undefined, b: PodFacts | undefined): boolean {
  return JSON.stringify(a) !== JSON.stringify(b);
}

/**
 * A namespace's pods as the API server reports them: listed once, then followed by a watch that
 * resumes from the last resourceVersion it saw, lists again when the server answers 410 Gone (the
 * version was compacted away), and retries failures with a bounded backoff.
 */
export class NamespacePodWatch {
  private readonly pods = new Map<string, PodFacts>();
  private resourceVersion = "";
  private synced = false;
  private lastError: Error | undefined;
  private waiters: { resolve: () => void; reject: (err: Error) => void }[] = [];
  private readonly stopping = new AbortController();
  private readonly backoff: Backoff;

  constructor(private readonly options: PodWatchOptions) {
    this.backoff = options.backoff ?? DEFAULT_BACKOFF;
  }

  start(): void {
    this.run().catch((err: unknown) =>
      this.options.log?.error({ err, namespace: this.options.namespace }, "pod watch stopped"),
    );
  }

  stop(): void {
    this.stopping.abort();
    for (const w of this.waiters.splice(0)) w.reject(new Error("pod watch stopped"));
  }

  /** The live pods running as `serviceAccount`. */
  podsOf(serviceAccount: string): PodFacts[] {
    return [...this.pods.values()].filter((p) => p.live && p.serviceAccount === serviceAccount);
  }

  /** Takes a pod just read from the API server, so it counts before its watch event arrives. */
  upsert(pod: PodFacts): void {
    const previous = this.pods.get(pod.name);
    this.pods.set(pod.name, pod);
    if (changed(previous, pod)) this.notify([previous, pod]);
  }

  /**
   * Resolves once the first list has arrived; rejects with the failure of the next attempt while
   * none has, or when `timeoutMs` passes.
   */
  whenSynced(timeoutMs: number): Promise<void> {
    if (this.synced) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        const why = this.lastError ? `: ${this.lastError.message}` : "";
        reject(
          new Error(`pods of namespace ${this.options.namespace} not listed within ${timeoutMs} ms${why}`),
        );
      }, timeoutMs);
      const waiter = {
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
        reject: (err: Error) => {
          clearTimeout(timer);
          reject(err);
        },
      };
      this.waiters.push(waiter);
    });
  }

  private async run(): Promise<void> {
    const { api, namespace, log } = this.options;
    const signal = this.stopping.signal;
    let failures = 0;
    while (!signal.aborted) {
      let gone = false;
      try {
        if (!this.resourceVersion) {
          const list = await api.listPods(namespace, signal);
          this.replaceAll(list.pods);
          this.resourceVersion = list.resourceVersion;
          this.markSynced();
          this.options.onListed?.();
        }
        // Written by the event callback: an object, so the checks below see its updates.
        const seen: { heard: boolean; gone: boolean; broken?: Error } = { heard: false, gone: false };
        await api.watchPods(
          namespace,
          this.resourceVersion,
          (event) => {
            seen.heard = true;
            try {
              seen.gone = this.apply(event);
            } catch (err) {
              seen.broken = err as Error;
            }
            return !seen.gone && !seen.broken;
          },
          signal,
        );
        if (seen.broken) throw seen.broken;
        gone = seen.gone;
        failures = 0;
        // A watch the server ends at once, with nothing to say, is not re-opened in a tight loop.
        if (!seen.heard) await sleep(this.backoff.initialMs, undefined, { signal }).catch(() => undefined);
      } catch (err) {
        if (signal.aborted) return;
        gone = err instanceof KubeApiError && err.status === 410;
        if (!gone) {
          this.lastError = err as Error;
          if (!this.synced) for (const w of this.waiters.splice(0)) w.reject(err as Error);
          log?.warn({ err, namespace }, "pod list/watch failed; retrying");
          await sleep(backoffDelay(this.backoff, failures++), undefined, { signal }).catch(() => undefined);
        }
      }
      // The version we would resume from is gone: only a fresh list is complete again.
      if (gone) this.resourceVersion = "";
    }
  }

  /** Applies one watch event; returns true when the server says the version is gone (410). */
  private apply(event: WatchEvent): boolean {
    if (event.type === "ERROR") {
      const status = event.object as Status;
      if (status.code === 410) return true;
      throw new Error(`watch of namespace ${this.options.namespace}: ${status.message ?? "error event"}`);
    }
    const pod = event.object as Pod;
    const version = pod.metadata?.resourceVersion;
    if (version) this.resourceVersion = version;
    if (event.type === "BOOKMARK") return false;
    let facts: PodFacts;
    try {
      facts = podFacts(pod);
    } catch (err) {
      if (!(err instanceof PodShapeError)) throw err;
      this.options.log?.warn({ namespace: this.options.namespace, reason: err.message }, "pod event ignored");
      return false;
    }
    const previous = this.pods.get(facts.name);
    if (event.type === "DELETED") {
      if (previous?.uid === facts.uid) this.pods.delete(facts.name);
      this.notify([previous]);
    } else {
      this.pods.set(facts.name, facts);
      if (changed(previous, facts)) this.notify([previous, facts]);
    }
    return false;
  }

  private replaceAll(pods: readonly Pod[]): void {
    const before = new Map(this.pods);
    this.pods.clear();
    for (const pod of pods) {
      try {
        const facts = podFacts(pod);
        this.pods.set(facts.name, facts);
      } catch (err) {
        if (!(err instanceof PodShapeError)) throw err;
        this.options.log?.warn({ namespace: this.options.namespace, reason: err.message }, "pod ignored");
      }
    }
    const touched: (PodFacts | undefined)[] = [];
    for (const name of new Set([...before.keys(), ...this.pods.keys()])) {
      if (changed(before.get(name), this.pods.get(name))) touched.push(before.get(name), this.pods.get(name));
    }
    this.notify(touched);
  }

  private notify(pods: readonly (PodFacts | undefined)[]): void {
    const accounts = new Set(pods.flatMap((p) => (p ? [p.serviceAccount] : [])));
    if (accounts.size > 0) this.options.onChange(accounts);
  }

  private markSynced(): void {
    this.synced = true;
    this.lastError = undefined;
    for (const w of this.waiters.splice(0)) w.resolve();
  }
}
