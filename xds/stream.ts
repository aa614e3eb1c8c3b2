import type { EventEmitter } from "node:events";
import type { PeerCertificate } from "node:tls";
import * as grpc from "@grpc/grpc-js";
import type { TypeRegistry } from "./registry.ts";
import { EMPTY, type ResourceSet, type Snapshot, type SnapshotCache } from "./snapshot.ts";
import { MAX_RESOURCE_NAME_LENGTH, MAX_SUBSCRIBED_NAMES } from "./subscription-bounds.ts";
import { MAX_TYPE_URL_LENGTH, MAX_UNSERVED_TYPES } from "./unserved.ts";

/**
 * What every ADS stream shares, whichever protocol it speaks: the subscription state kept per type
 * (admission of a type, bounds on names, how the node answered), nonces, and the flow of responses
 * into the transport (at most one per type in flight; reads held while one is owed; stall detection
 * for the server's sweep). The state-of-the-world and delta streams (sotw.ts, delta.ts) build on
 * it; the ADS server (server.ts) creates them and hosts what they share across streams.
 */

export interface AckEvent {
  readonly nodeId: string;
  readonly typeUrl: string;
  readonly version: string;
  readonly nonce: string;
}
export interface NackEvent extends AckEvent {
  readonly errorDetail: string;
}
export interface StreamEvent {
  readonly nodeId: string;
  /** The snapshot key the authorizer assigned. */
  readonly key: string;
  readonly protocol: "sotw" | "delta";
}

/** An open stream as `stream-open` listeners and `endStreams` see it. */
export interface OpenStreamEvent extends StreamEvent {
  /**
   * The client certificate the stream's connection presented (TLS listeners): the credential the
   * stream runs on, for as long as the connection lasts, whatever the client has renewed since.
   */
  readonly certificate: PeerCertificate | undefined;
}

/** A stream subscribed to a resource type the registry does not hold (once per stream and type). */
export interface UnservedEvent {
  readonly nodeId: string;
  readonly typeUrl: string;
  readonly protocol: "sotw" | "delta";
}

export interface AdsServerEvents {
  ack: [AckEvent];
  nack: [NackEvent];
  "stream-open": [OpenStreamEvent];
  "stream-close": [StreamEvent];
  /** A request the protocol says to ignore (stale nonce). */
  stale: [AckEvent];
  unserved: [UnservedEvent];
  /** A stream ended because the client took none of its responses for `sendTimeoutMs`. */
  "send-timeout": [StreamEvent];
}

/** What one stream holds and has answered, per type (for status pages and debugging). */
export interface TypeStatus {
  readonly typeUrl: string;
  /** false: a type the server does not serve, answered as having no resources (see README). */
  readonly served: boolean;
  /** "*" for wildcard, else the subscribed names. */
  readonly subscription: "*" | readonly string[];
  /** Resources the node was last sent (state of the world: of the last response; delta: held). */
  readonly resources: number;
  /** State-of-the-world version last sent; delta streams version each resource instead. */
  readonly version: string | undefined;
  /** "acked": the last response was accepted; "pending": sent, no answer yet; "nacked": refused. */
  readonly state: "acked" | "pending" | "nacked" | "idle";
  /** error_detail of the last NACK, while no later response was accepted. */
  readonly error: string | undefined;
  /** A response of this type waits for the previous one to leave the transport (see README). */
  readonly deferred: boolean;
}

export interface StreamStatus {
  readonly nodeId: string;
  readonly key: string;
  readonly protocol: "sotw" | "delta";
  readonly types: readonly TypeStatus[];
  /** Responses handed to the transport that it has not sent yet: at most one per type. */
  readonly responsesInFlight: number;
  /** Their size in bytes: what a client that does not read makes the server hold. */
  readonly bytesInFlight: number;
  /** Requests are not read while a response waits for an earlier one to be sent. */
  readonly readsHeld: boolean;
}

/** What a stream needs from the server that runs it. */
export interface StreamHost {
  readonly emit: EventEmitter<AdsServerEvents>["emit"];
  /** Queues this stream to be sent its new snapshot. */
  schedulePush(stream: BaseStream): void;
  /** A nonce no stream of the server has seen yet, greater than every earlier one. */
  nextNonce(): number;
  noteUnserved(event: UnservedEvent): void;
  sotwResponse(set: ResourceSet, after: number): SharedResponse;
  deltaResponse(from: ResourceSet, to: ResourceSet, after: number): SharedDelta | undefined;
}

/** Where a stream's snapshots come from and which types exist. */
export interface StreamOptions {
  readonly cache: SnapshotCache;
  readonly registry: TypeRegistry;
}

export class ProtocolError extends Error {
  constructor(
    readonly code: grpc.status,
    message: string,
  ) {
    super(message);
  }
}

/**
 * Sweeps for stalled streams per send timeout: a stream is ended between one and
 * 1 + 1/SWEEPS_PER_SEND_TIMEOUT send timeouts after the client last took a response.
 */
export const SWEEPS_PER_SEND_TIMEOUT = 4;

export interface SharedResponse {
  readonly nonce: number;
  readonly nonceText: string;
  readonly bytes: Buffer;
}

export interface SharedDelta extends SharedResponse {
  /** What a client holds after applying it: names and versions sent, names removed. */
  readonly updated: readonly (readonly [string, string])[];
  readonly removed: readonly string[];
}

export const nonceText = (n: number): string => n.toString(36);

/**
 * What a stream writes responses to. Its write callback runs once the transport has sent the
 * response on (HTTP/2 flow control let it out); until then the response is held in memory.
 */
export type ResponseTransport = Pick<grpc.ServerDuplexStream<unknown, Buffer>, "write" | "pause" | "resume">;

/**
 * Per type: at most one response in the transport. A response due while the previous one is still
 * there is deferred, and computed from the state of the moment it can be sent: what the client is
 * sent when it reads again is the latest state, never every state in between.
 */
export interface Outbox {
  inFlight: boolean;
  deferred: boolean;
}

/** How the node answered the last response of a type. */
export interface Answer {
  ackedNonce: string | undefined;
  error: string | undefined;
}

export function answerState(nonce: string | undefined, a: Answer): TypeStatus["state"] {
  if (nonce === undefined) return "idle";
  if (a.error !== undefined) return "nacked";
  return a.ackedNonce === nonce ? "acked" : "pending";
}

export abstract class BaseStream {
  protected snapshot: Snapshot;
  private readonly unwatch: () => void;
  /** The highest nonce this stream has sent. */
  protected lastNonce = 0;
  /** Distinct types this stream asked for that the server does not serve. */
  private unservedTypes = 0;
  closed = false;
  /** Ends the call with the error's status; set by the server once the stream is served. */
  fail: (err: unknown) => void = () => this.close();
  protected abstract readonly types: Map<string, Outbox>;
  /** Responses handed to the transport and not sent yet, and their bytes. */
  private writesInFlight = 0;
  private bytesInFlight = 0;
  private deferredTypes = 0;
  /** Requests are not read while a response is deferred: they could only ask for more responses. */
  readsHeld = false;
  /** A write completed (or started on an idle stream) since the last stall sweep. */
  private progressed = false;
  private stalledSweeps = 0;

  constructor(
    protected readonly server: StreamHost,
    private readonly call: ResponseTransport,
    readonly nodeId: string,
    readonly key: string,
    protected readonly options: StreamOptions,
  ) {
    this.snapshot = options.cache.get(key) ?? EMPTY;
    this.unwatch = options.cache.watch(key, (s) => {
      this.snapshot = s;
      server.schedulePush(this);
    });
  }

  protected nextNonce(): string {
    this.lastNonce = this.server.nextNonce();
    return nonceText(this.lastNonce);
  }

  /**
   * Whether a type this stream asks for the first time is served. On ADS every type shares the
   * stream, so a type the server does not serve is answered as having no resources rather than
   * ending the stream (and every served type with it). What a stream may keep for them is
   * bounded: past MAX_UNSERVED_TYPES distinct ones, or for a type URL longer than any real one,
   * the stream ends.
   */
  protected admitType(typeUrl: string): boolean {
    if (typeUrl === "")
      throw new ProtocolError(grpc.status.INVALID_ARGUMENT, "a request on ADS must carry a type_url");
    if (this.options.registry.has(typeUrl)) return true;
    if (typeUrl.length > MAX_TYPE_URL_LENGTH)
      throw new ProtocolError(
        grpc.status.INVALID_ARGUMENT,
        `type_url of ${typeUrl.length} characters: longer than ${MAX_TYPE_URL_LENGTH}, not a resource type`,
      );
    if (this.unservedTypes >= MAX_UNSERVED_TYPES)
      throw new ProtocolError(
        grpc.status.INVALID_ARGUMENT,
        `node ${this.nodeId} subscribed to more than ${MAX_UNSERVED_TYPES} resource types this server does not serve (the last: ${typeUrl})`,
      );
    this.unservedTypes++;
    this.server.noteUnserved({ nodeId: this.nodeId, typeUrl, protocol: this.protocol });
    return false;
  }

  /**
   * Ends the stream for a subscribed name longer than any real resource name: names are state the
   * stream keeps, and MAX_SUBSCRIBED_NAMES alone would not bound their size.
   */
  protected checkName(typeUrl: string, name: string): void {
    if (name.length > MAX_RESOURCE_NAME_LENGTH)
      throw new ProtocolError(
        grpc.status.INVALID_ARGUMENT,
        `node ${this.nodeId} subscribed to a resource of ${typeUrl} named with ${name.length} characters, more than ${MAX_RESOURCE_NAME_LENGTH}`,
      );
  }

  /** Ends the stream once it would hold more than MAX_SUBSCRIBED_NAMES names of one type. */
  protected checkNameCount(typeUrl: string, count: number): void {
    if (count > MAX_SUBSCRIBED_NAMES)
      throw new ProtocolError(
        grpc.status.INVALID_ARGUMENT,
        `node ${this.nodeId} subscribed to more than ${MAX_SUBSCRIBED_NAMES} resources of ${typeUrl} on one stream`,
      );
  }

  /** Sends what changed since the last snapshot; called by the server's push queue. */
  abstract onSnapshot(): void;

  /** Sends what a type is owed now that its previous response has left the transport. */
  protected abstract answerDeferred(typeUrl: string): void;

  /**
   * Whether a response of this type must wait because the previous one is still in the
   * transport. The type is then owed a response and the stream stops reading requests until
   * every owed response went out: a client that does not read cannot make the server hold more
   * than one response per type, whatever changes or requests come meanwhile.
   */
  protected mustDefer(box: Outbox): boolean {
    if (!box.inFlight) return false;
    if (!box.deferred) {
      box.deferred = true;
      this.deferredTypes++;
    }
    if (!this.readsHeld) {
      this.readsHeld = true;
      this.call.pause();
    }
    return true;
  }

  /** Writes a response of a type that has none in flight. */
  protected send(typeUrl: string, box: Outbox, bytes: Buffer): void {
    box.inFlight = true;
    if (this.writesInFlight++ === 0) this.progressed = true;
    this.bytesInFlight += bytes.length;
    this.call.write(bytes, () => this.written(typeUrl, box, bytes.length));
  }

  private written(typeUrl: string, box: Outbox, size: number): void {
    box.inFlight = false;
    this.writesInFlight--;
    this.bytesInFlight -= size;
    this.progressed = true;
    if (this.closed) return;
    if (box.deferred) {
      box.deferred = false;
      this.deferredTypes--;
      try {
        this.answerDeferred(typeUrl);
      } catch (err) {
        this.fail(err);
        return;
      }
    }
    if (this.readsHeld && this.deferredTypes === 0) {
      this.readsHeld = false;
      this.call.resume();
    }
  }

  /**
   * Called by the server's stall sweep: true once responses have been waiting in the transport
   * through SWEEPS_PER_SEND_TIMEOUT sweeps in a row without the client taking any.
   */
  stalledThroughSweep(): boolean {
    if (this.writesInFlight === 0 || this.progressed) {
      this.progressed = false;
      this.stalledSweeps = 0;
      return false;
    }
    return ++this.stalledSweeps >= SWEEPS_PER_SEND_TIMEOUT;
  }

  /** Types with a response in the transport. */
  waitingTypes(): string[] {
    return [...this.types].filter(([, box]) => box.inFlight).map(([typeUrl]) => typeUrl);
  }

  protected abstract typeStatus(): TypeStatus[];

  abstract readonly protocol: "sotw" | "delta";

  status(): StreamStatus {
    return {
      nodeId: this.nodeId,
      key: this.key,
      protocol: this.protocol,
      types: this.typeStatus(),
      responsesInFlight: this.writesInFlight,
      bytesInFlight: this.bytesInFlight,
      readsHeld: this.readsHeld,
    };
  }

  close(): void {
    this.closed = true;
    this.unwatch();
  }
}
