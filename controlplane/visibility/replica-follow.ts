import type { FlowRecord } from "../../core/flow.ts";
import { serverSentEvents } from "../../core/sse.ts";

/** Another live replica, as it announced itself. */
export interface ReplicaPeer {
  readonly replica: string;
  /** The base URL of its HTTP API, e.g. https://10.0.0.2:15080. */
  readonly api: string;
}

/** A replica whose flows an answer or a stream lacks, and why. */
export interface Unanswered extends ReplicaPeer {
  readonly reason: string;
}

export interface ReplicaFollowOptions {
  /** The other live replicas, asked again at every `refresh()`. */
  readonly peers: () => readonly ReplicaPeer[];
  readonly token: string;
  readonly fetch: typeof fetch;
  /** The query each replica is followed with (`follow=1&local=1` are added). */
  readonly query: URLSearchParams;
  /** How long a replica may take to start its stream. */
  readonly connectTimeoutMs: number;
  readonly onRecord: (r: FlowRecord) => void;
  /** A replica whose flows the stream lacks from now on, and why. */
  readonly onUnanswered: (u: Unanswered) => void;
}

/**
 * Follows every other live replica's own flow stream (`local=1`, so they do not follow further)
 * and hands each record on as it arrives. A replica that cannot be followed, or whose stream ends,
 * is reported once per attempt and tried again at the next `refresh()` while it is still announced;
 * one that joined since is followed from its next `refresh()`.
 */
export class ReplicaFollow {
  private readonly streams = new Map<string, AbortController>();
  private closed = false;

  constructor(private readonly options: ReplicaFollowOptions) {
    this.refresh();
  }

  refresh(): void {
    if (this.closed) return;
    for (const peer of this.options.peers()) {
      if (this.streams.has(peer.replica)) continue;
      const abort = new AbortController();
      this.streams.set(peer.replica, abort);
      void this.followOne(peer, abort).then((reason) => {
        if (this.streams.get(peer.replica) === abort) this.streams.delete(peer.replica);
        if (reason !== null && !this.closed) this.options.onUnanswered({ ...peer, reason });
      });
    }
  }

  close(): void {
    this.closed = true;
    for (const abort of this.streams.values()) abort.abort();
    this.streams.clear();
  }

  /** Streams one replica's records until it ends; the reason it ended, null when closed here. */
  private async followOne(peer: ReplicaPeer, abort: AbortController): Promise<string | null> {
    const params = new URLSearchParams(this.options.query);
    params.set("follow", "1");
    params.set("local", "1");
    const connect = setTimeout(
      () => abort.abort(new Error("connect timeout")),
      this.options.connectTimeoutMs,
    );
    try {
      const res = await this.options.fetch(`${peer.api}/api/flows?${params}`, {
        headers: { authorization: `Bearer ${this.options.token}` },
        signal: abort.signal,
      });
      clearTimeout(connect);
      if (!res.ok || !res.body) return `HTTP ${res.status} to a follow request`;
      for await (const e of serverSentEvents(res.body)) {
        if (e.event !== "flow") continue;
        this.options.onRecord(JSON.parse(e.data) as FlowRecord);
      }
      return "its stream ended";
    } catch (err) {
      if (this.closed) return null;
      if (abort.signal.reason instanceof Error && abort.signal.reason.message === "connect timeout")
        return `no stream within ${this.options.connectTimeoutMs} ms`;
      const e = err as Error & { cause?: { message?: string } };
      return e.cause?.message ?? e.message;
    } finally {
      clearTimeout(connect);
    }
  }
}

/**
 * The keys of the records a stream has sent, to send each once (a batch re-sent to another replica
 * after a failover is stored on both). Bounded: the oldest keys go first, long after any duplicate
 * of theirs could still arrive.
 */
export class RecentKeys {
  private readonly keys = new Set<string>();

  constructor(private readonly max: number) {}

  /** True when `key` is new (and remembers it). */
  add(key: string): boolean {
    if (this.keys.has(key)) return false;
    this.keys.add(key);
    if (this.keys.size > this.max) this.keys.delete(this.keys.values().next().value as string);
    return true;
  }
}
