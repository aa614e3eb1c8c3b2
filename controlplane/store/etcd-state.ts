import { EventEmitter } from "node:events";
import { Etcd3, type IKeyValue, type Namespace, type Watcher } from "etcd3";
import type { Logger } from "pino";
import { HttpError } from "../http/router.ts";

/**
 * The control plane's connection to etcd: one client over every member given, all keys under one
 * prefix, every unary call bounded by a deadline so a lost quorum turns into an error rather than
 * a hang. Writes that etcd does not accept become `StoreUnavailableError`, which the HTTP API
 * answers with 503 and the reason; reads are served from watched caches, so a replica cut off
 * from etcd keeps serving the last state it saw.
 */

export interface EtcdStoreOptions {
  /** Client URLs of the members, e.g. http://127.0.0.1:2379. */
  readonly endpoints: readonly string[];
  /** Every key lives under this prefix (default `/sigil/`), so one etcd can hold other data too. */
  readonly prefix?: string;
  /** Deadline of each unary call; a write without quorum fails after it. Default 3000 ms. */
  readonly callTimeoutMs?: number;
  readonly log: Logger;
}

/** etcd did not accept a change: the replica refuses writes until it is back. */
export class StoreUnavailableError extends HttpError {
  constructor(what: string, endpoints: readonly string[], cause: unknown) {
    super(
      503,
      `${what} refused: etcd (${endpoints.join(", ")}) did not accept the write (${reasonOf(cause)}); this replica keeps serving its last known state and accepts changes again once etcd has a quorum`,
    );
  }
}

/** A compare-and-swap lost to a concurrent change made through another replica. */
export class StoreConflictError extends HttpError {
  constructor(message: string) {
    super(409, message);
  }
}

function reasonOf(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  return message.split("\n")[0] ?? message;
}

export interface StoredValue {
  readonly value: string;
  /** etcd's modification revision of the key: what a compare-and-swap compares. */
  readonly modRevision: string;
}

export class EtcdState {
  private readonly watched: WatchedPrefix[] = [];

  private constructor(
    readonly client: Etcd3,
    readonly kv: Namespace,
    readonly options: EtcdStoreOptions,
  ) {}

  /** Connects and proves the cluster answers (a read needs a quorum); names the endpoints if not. */
  static async connect(options: EtcdStoreOptions): Promise<EtcdState> {
    if (options.endpoints.length === 0) throw new Error("no etcd endpoints given");
    const timeout = options.callTimeoutMs ?? 3000;
    const client = new Etcd3({
      hosts: [...options.endpoints],
      dialTimeout: timeout,
      defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + timeout }),
    });
    const state = new EtcdState(client, client.namespace(options.prefix ?? "/sigil/"), options);
    try {
      await state.kv.get("probe").string();
    } catch (err) {
      client.close();
      throw new Error(`etcd at ${options.endpoints.join(", ")} does not answer: ${reasonOf(err)}`, {
        cause: err,
      });
    }
    return state;
  }

  /** Runs a write, turning any etcd failure into `StoreUnavailableError` naming `what`. */
  async write<T>(what: string, op: () => Promise<T>): Promise<T> {
    try {
      return await op();
    } catch (err) {
      if (err instanceof HttpError) throw err;
      throw new StoreUnavailableError(what, this.options.endpoints, err);
    }
  }

  /** A fresh (linearizable) read of one key. */
  async read(key: string, what: string): Promise<StoredValue | undefined> {
    return this.write(what, async () => {
      const res = await this.kv.get(key).exec();
      const kv = res.kvs[0];
      return kv ? { value: kv.value.toString(), modRevision: kv.mod_revision } : undefined;
    });
  }

  /**
   * Writes `value` only if the key is unchanged since `expected` was read (absent: not created yet);
   * returns the key's new modification revision, or undefined when the comparison failed.
   */
  async compareAndSwap(
    key: string,
    expected: StoredValue | undefined,
    value: string,
    what: string,
  ): Promise<string | undefined> {
    return this.write(what, async () => {
      const txn = expected
        ? this.kv.if(key, "Mod", "==", Number(expected.modRevision))
        : this.kv.if(key, "Create", "==", 0);
      const res = await txn.then(this.kv.put(key).value(value)).commit();
      return res.succeeded ? res.header.revision : undefined;
    });
  }

  async put(key: string, value: string, what: string): Promise<void> {
    await this.write(what, () => this.kv.put(key).value(value).exec());
  }

  /** Loads every key under `prefix` and keeps the copy current from a watch. */
  async watchPrefix(prefix: string): Promise<WatchedPrefix> {
    const watched = await WatchedPrefix.open(this, prefix);
    this.watched.push(watched);
    return watched;
  }

  close(): void {
    for (const w of this.watched.splice(0)) w.close();
    this.client.close();
  }
}

interface WatchedEvents {
  /** A key under the prefix changed (value) or went (undefined), after the copy was updated. */
  change: [key: string, value: string | undefined];
}

/**
 * The keys under one prefix, loaded at once and then kept current by a watch that resumes from
 * the last revision seen after any interruption, so a replica that lost etcd catches up on every
 * change it missed when etcd returns. Keys are given without the prefix.
 */
export class WatchedPrefix extends EventEmitter<WatchedEvents> {
  private readonly entries = new Map<string, StoredValue>();
  private watcher: Watcher | undefined;

  private constructor(
    private readonly state: EtcdState,
    private readonly prefix: string,
  ) {
    super();
  }

  static async open(state: EtcdState, prefix: string): Promise<WatchedPrefix> {
    const w = new WatchedPrefix(state, prefix);
    const res = await state.kv.getAll().prefix(prefix).exec();
    for (const kv of res.kvs) w.apply(kv, false);
    const next = (BigInt(res.header.revision) + 1n).toString();
    w.watcher = await state.kv.watch().prefix(prefix).startRevision(next).create();
    w.watcher.on("put", (kv) => w.apply(kv, false));
    w.watcher.on("delete", (kv) => w.apply(kv, true));
    w.watcher.on("error", (err) => state.options.log.warn({ err, prefix }, "etcd watch error; it resumes"));
    return w;
  }

  get(key: string): StoredValue | undefined {
    return this.entries.get(key);
  }

  values(): [string, StoredValue][] {
    return [...this.entries];
  }

  /**
   * Resolves once `done` holds for this copy (a write of ours has come back through the watch), or
   * after `timeoutMs` in any case: the write is in etcd either way, the copy merely lags.
   */
  settled(done: () => boolean, timeoutMs = 3000): Promise<void> {
    if (done()) return Promise.resolve();
    return new Promise((resolve) => {
      const check = () => {
        if (!done()) return;
        finish();
      };
      const finish = () => {
        clearTimeout(timer);
        this.off("change", check);
        resolve();
      };
      const timer = setTimeout(finish, timeoutMs);
      this.on("change", check);
    });
  }

  private apply(kv: IKeyValue, deleted: boolean): void {
    const key = kv.key.toString().slice(this.prefix.length);
    const previous = this.entries.get(key);
    if (deleted) {
      if (!this.entries.delete(key)) return;
      this.emit("change", key, undefined);
      return;
    }
    // A watch that resumes may replay what the initial load already holds.
    if (previous && BigInt(previous.modRevision) >= BigInt(kv.mod_revision)) return;
    const value = kv.value.toString();
    this.entries.set(key, { value, modRevision: kv.mod_revision });
    this.emit("change", key, value);
  }

  close(): void {
    void this.watcher?.cancel();
    this.removeAllListeners();
  }
}
