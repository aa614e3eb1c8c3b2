import { EventEmitter } from "node:events";
import { mkdir, open, readdir, readFile, rm, truncate } from "node:fs/promises";
import type { FileHandle } from "node:fs/promises";
import { join } from "node:path";
import { crc32 } from "node:zlib";
import type { Logger } from "pino";
import type { FlowRecord } from "../../core/flow.ts";
import type { Labels } from "../../core/labels.ts";
import { EdgeAggregator, edgeKey } from "./edges.ts";
import type { Edge, EdgeReport } from "./edges.ts";
import { createLogger } from "../../core/logger.ts";

/**
 * The control plane's embedded flow store: an append-only log split into segment files.
 *
 * Each line of a segment is `<crc32 hex> <json record>\n`. An append is written and fdatasync'ed
 * before it resolves, so a record the control plane acknowledged survives a crash or restart. On
 * open, the segments are replayed: a torn last line (a crash mid-write, never acknowledged) is cut
 * off; a line that fails its checksum anywhere else is skipped and counted. Retention drops whole
 * segments, oldest first, when the store is larger than `maxBytes` or a segment's newest record is
 * older than `maxAgeMs`; records are de-duplicated by reporter and id across everything retained.
 */

export interface FlowStoreOptions {
  readonly dir: string;
  /** Keep records at most this long (default 7 days). */
  readonly maxAgeMs?: number;
  /** Keep at most this many bytes of segments (default 256 MiB). */
  readonly maxBytes?: number;
  /** Start a new segment once the active one reaches this size (default 8 MiB). */
  readonly segmentBytes?: number;
  readonly now?: () => number;
  readonly logger?: Logger;
}

export interface FlowFilter {
  /** Only records at or after this time (ms since epoch). */
  readonly since?: number;
  readonly until?: number;
  /** true: only records denied or that would be denied in enforce mode; false: only cleanly allowed. */
  readonly denied?: boolean;
  /** Every label must match on the source or on the destination. */
  readonly selector?: Labels;
  /** SPIFFE ID that must be the source or the destination. */
  readonly workload?: string;
  /** Only records of this edge (see edges.ts `edgeKey`). */
  readonly edge?: string;
  /** The newest `limit` matching records (default 100). */
  readonly limit?: number;
}

export interface AppendResult {
  /** The records that were new, in order; duplicates of retained ids are left out. */
  readonly accepted: readonly FlowRecord[];
  readonly duplicates: number;
}

export interface StoreStats {
  readonly records: number;
  readonly bytes: number;
  readonly segments: number;
  readonly corruptLines: number;
  readonly tornTailBytes: number;
}

interface Segment {
  readonly name: string;
  readonly path: string;
  bytes: number;
  newest: number;
  readonly records: FlowRecord[];
}

export class FlowStoreError extends Error {
  constructor(
    readonly file: string,
    message: string,
  ) {
    super(`${file}: ${message}`);
  }
}

const SEGMENT_NAME = /^(\d{12})\.seg$/;

/**
 * Records are the same when the same reporter gave them the same id: a reporter's ids need only be
 * unique to it, and one reporter can never shadow another's records by sending their ids first.
 */
function recordKey(r: FlowRecord): string {
  return `${r.reporter.spiffeId} ${r.id}`;
}
const DAY = 24 * 60 * 60 * 1000;

export class FlowStore extends EventEmitter<{ flows: [readonly FlowRecord[]] }> {
  private readonly segments: Segment[] = [];
  private readonly keys = new Set<string>();
  private readonly aggregator = new EdgeAggregator();
  private active: FileHandle | null = null;
  private tail: Promise<unknown> = Promise.resolve();
  private closed = false;
  private corruptLines = 0;
  private tornTailBytes = 0;
  private retentionTimer: NodeJS.Timeout | null = null;
  private readonly maxAgeMs: number;
  private readonly maxBytes: number;
  private readonly segmentBytes: number;
  private readonly now: () => number;
  private readonly log: Logger;

  private constructor(private readonly opts: FlowStoreOptions) {
    super();
    this.maxAgeMs = opts.maxAgeMs ?? 7 * DAY;
    this.maxBytes = opts.maxBytes ?? 256 * 1024 * 1024;
    this.segmentBytes = opts.segmentBytes ?? 8 * 1024 * 1024;
    this.now = opts.now ?? Date.now;
    this.log = opts.logger ?? createLogger("flow-store");
    this.setMaxListeners(0);
  }

  /** Opens (creating if needed) the store in `dir` and replays its segments. */
  static async open(opts: FlowStoreOptions): Promise<FlowStore> {
    const store = new FlowStore(opts);
    await mkdir(opts.dir, { recursive: true, mode: 0o700 });
    await store.replay();
    await store.enforceRetention();
    const interval = Math.min(60_000, Math.max(1_000, Math.floor(store.maxAgeMs / 10)));
    store.retentionTimer = setInterval(() => {
      store
        .serialize(() => store.enforceRetention())
        .catch((err: unknown) => {
          store.log.error({ err }, "flow store retention failed");
        });
    }, interval);
    store.retentionTimer.unref();
    return store;
  }

  /** Durably appends the records that are new; resolves after they are on disk. */
  append(records: readonly FlowRecord[]): Promise<AppendResult> {
    return this.serialize(async () => {
      if (this.closed) throw new Error("flow store is closed");
      const fresh: FlowRecord[] = [];
      const batchKeys = new Set<string>();
      for (const r of records) {
        const key = recordKey(r);
        if (this.keys.has(key) || batchKeys.has(key)) continue;
        batchKeys.add(key);
        fresh.push(r);
      }
      if (fresh.length > 0) {
        await this.write(fresh);
        for (const r of fresh) {
          this.keys.add(recordKey(r));
          this.aggregator.add(r);
        }
        await this.enforceRetention();
        this.emit("flows", fresh);
      }
      return { accepted: fresh, duplicates: records.length - fresh.length };
    });
  }

  /** The newest `limit` records matching the filter, oldest first. */
  query(filter: FlowFilter = {}): FlowRecord[] {
    const limit = Math.max(0, filter.limit ?? 100);
    const horizon = this.now() - this.maxAgeMs;
    const out: FlowRecord[] = [];
    for (let s = this.segments.length - 1; s >= 0 && out.length < limit; s--) {
      const records = (this.segments[s] as Segment).records;
      for (let i = records.length - 1; i >= 0 && out.length < limit; i--) {
        const r = records[i] as FlowRecord;
        if (r.time >= horizon && flowMatches(r, filter)) out.push(r);
      }
    }
    return out.sort((a, b) => a.time - b.time);
  }

  /** Every retained record matching the filter (no limit), oldest first; used by suggest/simulate. */
  all(filter: Omit<FlowFilter, "limit"> = {}): FlowRecord[] {
    return this.query({ ...filter, limit: Number.MAX_SAFE_INTEGER });
  }

  edges(): Edge[] {
    return this.aggregator.list();
  }

  /** The edges with each report role apart, for merging with other replicas' edges. */
  edgeReports(): EdgeReport[] {
    return this.aggregator.reports();
  }

  edge(id: string): Edge | undefined {
    return this.aggregator.get(id);
  }

  stats(): StoreStats {
    return {
      records: this.keys.size,
      bytes: this.segments.reduce((n, s) => n + s.bytes, 0),
      segments: this.segments.length,
      corruptLines: this.corruptLines,
      tornTailBytes: this.tornTailBytes,
    };
  }

  /** Finishes pending appends and closes the active segment. */
  async close(): Promise<void> {
    if (this.retentionTimer) clearInterval(this.retentionTimer);
    await this.serialize(async () => {
      this.closed = true;
      await this.active?.close();
      this.active = null;
    });
    this.removeAllListeners();
  }

  private serialize<T>(job: () => Promise<T>): Promise<T> {
    const run = this.tail.then(job, job);
    this.tail = run.catch(() => undefined);
    return run;
  }

  private async write(records: readonly FlowRecord[]): Promise<void> {
    const text = records.map(encodeLine).join("");
    const bytes = Buffer.byteLength(text);
    let seg = this.segments.at(-1);
    if (!seg || !this.active || seg.bytes >= this.segmentBytes) seg = await this.roll();
    const fh = this.active as FileHandle;
    try {
      await fh.write(text);
      await fh.datasync();
    } catch (err) {
      // The segment may now hold part of this write; a fresh segment keeps later appends clean,
      // and replay will cut the partial line as a torn tail of this one.
      await this.active?.close().catch(() => undefined);
      this.active = null;
      throw new FlowStoreError(seg.path, `append failed: ${(err as Error).message}`);
    }
    seg.bytes += bytes;
    for (const r of records) {
      seg.records.push(r);
      if (r.time > seg.newest) seg.newest = r.time;
    }
  }

  private async roll(): Promise<Segment> {
    await this.active?.close();
    this.active = null;
    const last = this.segments.at(-1);
    const next = last ? Number(SEGMENT_NAME.exec(last.name)?.[1] ?? 0) + 1 : 1;
    const name = `${String(next).padStart(12, "0")}.seg`;
    const path = join(this.opts.dir, name);
    this.active = await open(path, "a", 0o600);
    await syncDir(this.opts.dir);
    const seg: Segment = { name, path, bytes: 0, newest: 0, records: [] };
    this.segments.push(seg);
    return seg;
  }

  private async replay(): Promise<void> {
    const names = (await readdir(this.opts.dir)).filter((n) => SEGMENT_NAME.test(n)).sort();
    for (const [index, name] of names.entries()) {
      const path = join(this.opts.dir, name);
      const data = await readFile(path);
      const isLast = index === names.length - 1;
      const seg: Segment = { name, path, bytes: 0, newest: 0, records: [] };
      let offset = 0;
      let goodEnd = 0;
      while (offset < data.length) {
        const nl = data.indexOf(0x0a, offset);
        const end = nl === -1 ? data.length : nl + 1;
        const record = nl === -1 ? null : decodeLine(data.subarray(offset, nl));
        if (record) {
          goodEnd = end;
          if (!this.keys.has(recordKey(record))) {
            this.keys.add(recordKey(record));
            this.aggregator.add(record);
            seg.records.push(record);
            if (record.time > seg.newest) seg.newest = record.time;
          }
        } else if (nl !== -1) {
          this.corruptLines++;
        }
        offset = end;
      }
      if (isLast && goodEnd < data.length) {
        // Whatever follows the last intact line of the newest segment was never acknowledged.
        this.tornTailBytes += data.length - goodEnd;
        this.corruptLines = Math.max(0, this.corruptLines - countLines(data.subarray(goodEnd)));
        await truncate(path, goodEnd);
        this.log.warn({ file: path, bytes: data.length - goodEnd }, "cut torn tail of flow segment");
      }
      seg.bytes = isLast ? goodEnd : data.length;
      this.segments.push(seg);
    }
    if (this.corruptLines > 0) {
      this.log.error({ dir: this.opts.dir, lines: this.corruptLines }, "skipped corrupt flow records");
    }
    const last = this.segments.at(-1);
    if (last) this.active = await open(last.path, "a", 0o600);
  }

  private async enforceRetention(): Promise<void> {
    const horizon = this.now() - this.maxAgeMs;
    let total = this.segments.reduce((n, s) => n + s.bytes, 0);
    while (this.segments.length > 0) {
      const oldest = this.segments[0] as Segment;
      const expired = oldest.records.length > 0 && oldest.newest < horizon;
      const oversize = total > this.maxBytes && this.segments.length > 1;
      if (!expired && !oversize) break;
      if (oldest === this.segments.at(-1)) {
        await this.active?.close();
        this.active = null;
      }
      await rm(oldest.path, { force: true });
      this.segments.shift();
      total -= oldest.bytes;
      for (const r of oldest.records) {
        this.keys.delete(recordKey(r));
        this.aggregator.remove(r);
      }
      this.log.info({ file: oldest.path, records: oldest.records.length, expired }, "dropped flow segment");
    }
  }
}

/** Whether a record passes a filter (the `limit` is not applied). */
export function flowMatches(r: FlowRecord, f: FlowFilter): boolean {
  if (f.since !== undefined && r.time < f.since) return false;
  if (f.until !== undefined && r.time > f.until) return false;
  if (f.denied !== undefined && (r.verdict === "deny" || r.wouldDeny) !== f.denied) return false;
  if (f.workload !== undefined && r.source.spiffeId !== f.workload && r.destination.spiffeId !== f.workload) {
    return false;
  }
  if (f.edge !== undefined && edgeKey(r) !== f.edge) return false;
  if (f.selector) {
    const sel = Object.entries(f.selector);
    const on = (labels: Labels) => sel.every(([k, v]) => labels[k] === v);
    if (!on(r.source.labels) && !on(r.destination.labels)) return false;
  }
  return true;
}

function encodeLine(r: FlowRecord): string {
  const json = JSON.stringify(r);
  const sum = crc32(json).toString(16).padStart(8, "0");
  return `${sum} ${json}\n`;
}

function decodeLine(line: Buffer): FlowRecord | null {
  if (line.length < 10 || line[8] !== 0x20) return null;
  const json = line.subarray(9);
  if (line.subarray(0, 8).toString("latin1") !== crc32(json).toString(16).padStart(8, "0")) return null;
  try {
    const value = JSON.parse(json.toString("utf8")) as FlowRecord;
    return typeof value?.id === "string" && typeof value.time === "number" ? value : null;
  } catch {
    return null;
  }
}

function countLines(buf: Buffer): number {
  let n = 0;
  for (const b of buf) if (b === 0x0a) n++;
  return n;
}

async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, "r");
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
