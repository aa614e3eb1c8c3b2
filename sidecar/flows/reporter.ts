import { randomUUID } from "node:crypto";
import { EventEmitter } from "node:events";
import type * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";
import { Counter, Gauge } from "prom-client";
import type { Registry } from "prom-client";
import type { FlowRecord } from "../../core/flow.ts";
import type { FlowSink } from "../inputs/sources.ts";
import { FlowServiceClient, toWireFlow } from "../../core/flow-wire.ts";
import type { WireAck, WireBatch } from "../../core/flow-wire.ts";
import { createLogger } from "../../core/logger.ts";

export interface FlowReporterOptions {
  /** Control plane gRPC address, `host:port`. */
  readonly target: string;
  /** Called at every (re)connect, so a rotated workload certificate is used by the next stream. */
  readonly credentials: () => grpc.ChannelCredentials;
  readonly channelOptions?: grpc.ChannelOptions;
  /** Records held (batched or awaiting ack) before new ones are dropped (default 10,000). */
  readonly maxBuffered?: number;
  /**
   * Records per batch (default 100). A batch is serialized in one synchronous write, about 5 µs per
   * record, during which the sidecar forwards nothing: the size bounds that stall.
   */
  readonly batchSize?: number;
  /** A partial batch is sent after this long (default 1,000 ms). */
  readonly flushIntervalMs?: number;
  readonly backoffInitialMs?: number;
  readonly backoffMaxMs?: number;
  /** The sidecar's metrics registry: reported, dropped and buffered gauges are added to it. */
  readonly registry?: Registry;
  readonly logger?: Logger;
}

export interface FlowReporterStats {
  readonly connected: boolean;
  /** Records not yet acknowledged (waiting for a batch, or sent and unacknowledged). */
  readonly buffered: number;
  readonly acknowledged: number;
  readonly dropped: number;
  readonly reconnects: number;
}

interface Batch {
  readonly sequence: number;
  readonly records: readonly FlowRecord[];
}

type Stream = grpc.ClientDuplexStream<WireBatch, WireAck>;

/**
 * The sidecar side of flow reporting: buffers records, cuts them into numbered batches, streams
 * them to the control plane's FlowService and forgets a batch only when its ack arrives. After a
 * disconnect it reconnects with jittered exponential backoff and resends every unacknowledged batch
 * in order; the control plane de-duplicates by record id, so nothing is lost or counted twice. The
 * buffer is bounded: while the control plane is away for long, new records are dropped and counted
 * (`stats().dropped`, `sigil_sidecar_flows_dropped_total`) rather than growing memory without end.
 */
export class FlowReporter
  extends EventEmitter<{
    ack: [WireAck];
    connected: [];
    /** The stream ended or failed (also when it never came up). */ disconnected: [Error];
  }>
  implements FlowSink
{
  private readonly session = randomUUID();
  private readonly maxBuffered: number;
  private readonly batchSize: number;
  private readonly flushIntervalMs: number;
  private readonly backoffInitialMs: number;
  private readonly backoffMaxMs: number;
  private readonly log: Logger;
  private pending: FlowRecord[] = [];
  private readonly unacked = new Map<number, Batch>();
  private unackedRecords = 0;
  private nextSequence = 1;
  private acknowledged = 0;
  private dropped = 0;
  private reconnects = 0;
  private backoffMs: number;
  private client: grpc.Client | null = null;
  private stream: Stream | null = null;
  private connected = false;
  private closed = false;
  private flushTimer: NodeJS.Timeout | null = null;
  private fullBatch: NodeJS.Immediate | null = null;
  /** Highest batch sequence written to the current stream (0: none yet). */
  private sentThrough = 0;
  private writing: NodeJS.Immediate | null = null;
  private reconnectTimer: NodeJS.Timeout | null = null;
  private readonly metrics: { reported: Counter; dropped: Counter; buffered: Gauge } | null;

  constructor(private readonly opts: FlowReporterOptions) {
    super();
    this.maxBuffered = opts.maxBuffered ?? 10_000;
    this.batchSize = opts.batchSize ?? 100;
    this.flushIntervalMs = opts.flushIntervalMs ?? 1_000;
    this.backoffInitialMs = opts.backoffInitialMs ?? 200;
    this.backoffMaxMs = opts.backoffMaxMs ?? 10_000;
    this.backoffMs = this.backoffInitialMs;
    this.log = opts.logger ?? createLogger("flow-reporter");
    this.metrics = opts.registry
      ? {
          reported: new Counter({
            name: "sigil_sidecar_flows_reported_total",
            help: "Flow records acknowledged by the control plane",
            registers: [opts.registry],
          }),
          dropped: new Counter({
            name: "sigil_sidecar_flows_dropped_total",
            help: "Flow records dropped because the reporting buffer was full",
            registers: [opts.registry],
          }),
          buffered: new Gauge({
            name: "sigil_sidecar_flows_buffered",
            help: "Flow records waiting to be acknowledged by the control plane",
            registers: [opts.registry],
          }),
        }
      : null;
  }

  /** Opens the stream to the control plane. */
  start(): void {
    if (this.closed || this.stream) return;
    this.connect();
  }

  report(record: FlowRecord): void {
    if (this.closed) return;
    if (this.pending.length + this.unackedRecords >= this.maxBuffered) {
      this.dropped++;
      this.metrics?.dropped.inc();
      if (this.dropped === 1 || this.dropped % 1000 === 0) {
        this.log.warn({ dropped: this.dropped }, "flow buffer full: dropping flow records");
      }
      return;
    }
    this.pending.push(record);
    this.metrics?.buffered.inc();
    if (this.pending.length >= this.batchSize) this.scheduleFullBatch();
    else if (!this.flushTimer) {
      this.flushTimer = setTimeout(() => {
        this.flushTimer = null;
        this.cutBatch();
      }, this.flushIntervalMs);
      this.flushTimer.unref();
    }
  }

  stats(): FlowReporterStats {
    return {
      connected: this.connected,
      buffered: this.pending.length + this.unackedRecords,
      acknowledged: this.acknowledged,
      dropped: this.dropped,
      reconnects: this.reconnects,
    };
  }

  /** Sends what is buffered and resolves once all of it is acknowledged; rejects after `timeoutMs`. */
  flush(timeoutMs = 10_000): Promise<void> {
    this.cutBatch();
    if (this.unacked.size === 0) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.off("ack", onAck);
        reject(
          new Error(`flow reporter: ${this.unackedRecords} records unacknowledged after ${timeoutMs} ms`),
        );
      }, timeoutMs);
      const onAck = () => {
        if (this.unacked.size > 0) return;
        clearTimeout(timer);
        this.off("ack", onAck);
        resolve();
      };
      this.on("ack", onAck);
    });
  }

  /** Flushes (bounded by `drainMs`), then closes the stream. Unsent records are counted as dropped. */
  async close(drainMs = 5_000): Promise<void> {
    if (this.closed) return;
    try {
      if (this.connected) await this.flush(drainMs);
    } catch (err) {
      this.log.warn({ err }, "closing flow reporter with unacknowledged records");
    }
    this.closed = true;
    if (this.flushTimer) clearTimeout(this.flushTimer);
    if (this.fullBatch) clearImmediate(this.fullBatch);
    if (this.writing) clearImmediate(this.writing);
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.dropped += this.pending.length + this.unackedRecords;
    this.stream?.end();
    this.stream = null;
    this.client?.close();
    this.client = null;
    this.connected = false;
  }

  /**
   * A full batch goes out on the next turn of the event loop, one batch per turn: the request whose
   * decision filled it is not charged for serializing it, and a burst of records never serializes
   * several batches in one stall.
   */
  private scheduleFullBatch(): void {
    if (this.fullBatch || this.closed) return;
    this.fullBatch = setImmediate(() => {
      this.fullBatch = null;
      if (this.closed || this.pending.length < this.batchSize) return;
      this.enqueue(this.pending.splice(0, this.batchSize));
      if (this.pending.length >= this.batchSize) this.scheduleFullBatch();
    });
  }

  private enqueue(records: readonly FlowRecord[]): void {
    const batch: Batch = { sequence: this.nextSequence++, records };
    this.unacked.set(batch.sequence, batch);
    this.unackedRecords += records.length;
    this.writeNext();
  }

  /**
   * Writes the unacknowledged batches the current stream has not had, in sequence order, one per
   * turn of the event loop: a backlog (after a reconnect, up to maxBuffered records) never
   * serializes in one stall, and a batch cut meanwhile waits its turn, so acks stay in order.
   */
  private writeNext(): void {
    const stream = this.stream;
    if (!stream || this.writing) return;
    const batch = this.firstUnsent();
    if (!batch) return;
    this.send(stream, batch);
    this.sentThrough = batch.sequence;
    if (!this.firstUnsent()) return;
    this.writing = setImmediate(() => {
      this.writing = null;
      this.writeNext();
    });
  }

  private firstUnsent(): Batch | undefined {
    for (const batch of this.unacked.values()) if (batch.sequence > this.sentThrough) return batch;
    return undefined;
  }

  private cutBatch(): void {
    if (this.flushTimer) {
      clearTimeout(this.flushTimer);
      this.flushTimer = null;
    }
    while (this.pending.length > 0) this.enqueue(this.pending.splice(0, this.batchSize));
  }

  private send(stream: Stream, batch: Batch): void {
    stream.write({
      session: this.session,
      sequence: batch.sequence,
      flows: batch.records.map(toWireFlow),
      droppedTotal: this.dropped,
    });
  }

  private connect(): void {
    this.client?.close();
    const client = new FlowServiceClient(this.opts.target, this.opts.credentials(), this.opts.channelOptions);
    this.client = client;
    const stream = (client as unknown as { StreamFlows(): Stream }).StreamFlows();
    this.stream = stream;
    stream.on("data", (ack: WireAck) => this.onAck(ack));
    const lost = (err: Error) => {
      if (this.stream !== stream) return;
      this.stream = null;
      this.connected = false;
      this.emit("disconnected", err);
      if (this.closed) return;
      this.scheduleReconnect(err);
    };
    stream.on("error", lost);
    stream.on("end", () => lost(new Error("control plane ended the flow stream")));
    // Everything not yet acknowledged goes again, in order; the control plane drops duplicates.
    this.sentThrough = 0;
    if (this.writing) clearImmediate(this.writing);
    this.writing = null;
    this.writeNext();
    stream.once("metadata", () => {
      if (this.stream !== stream) return;
      this.connected = true;
      this.backoffMs = this.backoffInitialMs;
      this.emit("connected");
    });
  }

  private scheduleReconnect(err: Error): void {
    const delay = Math.round(this.backoffMs * (0.5 + Math.random() / 2));
    this.backoffMs = Math.min(this.backoffMaxMs, this.backoffMs * 2);
    this.log.warn(
      { err: err.message, retryInMs: delay, buffered: this.stats().buffered },
      "flow stream lost",
    );
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      if (this.closed) return;
      this.reconnects++;
      this.connect();
    }, delay);
    this.reconnectTimer.unref();
  }

  private onAck(ack: WireAck): void {
    const sequence = Number(ack.sequence);
    // Acks arrive in order: one for batch N means every earlier batch is stored as well.
    for (const [seq, batch] of this.unacked) {
      if (seq > sequence) break;
      this.unacked.delete(seq);
      this.unackedRecords -= batch.records.length;
      this.acknowledged += batch.records.length;
      this.metrics?.reported.inc(batch.records.length);
      this.metrics?.buffered.dec(batch.records.length);
    }
    if (ack.rejected > 0) this.log.error({ errors: ack.errors }, "control plane rejected flow records");
    this.emit("ack", ack);
  }
}
