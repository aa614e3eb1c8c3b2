import { EventEmitter } from "node:events";
import type { PeerCertificate } from "node:tls";
import * as grpc from "@grpc/grpc-js";
import type { TypeRegistry } from "./registry.ts";
import { EMPTY, versionOf, type ResourceSet, type Snapshot, type SnapshotCache } from "./snapshot.ts";
import { MAX_RESOURCE_NAME_LENGTH, MAX_SUBSCRIBED_NAMES } from "./subscription-bounds.ts";
import {
  MAX_TYPE_URL_LENGTH,
  MAX_UNSERVED_TYPES,
  NOTHING_VERSION,
  warnOnStderr,
  type XdsWarnLog,
} from "./unserved.ts";
import {
  adsServiceDefinition,
  encodeDeltaResponse,
  encodeSotwResponse,
  nodeInfo,
  type DeltaRequest,
  type NodeInfo,
  type SotwRequest,
} from "./wire.ts";

/** What the server knows about the other end of a stream before it trusts the node it claims. */
export interface StreamPeer {
  readonly address: string;
  /** "ssl" on a TLS listener. */
  readonly transportSecurity: string | undefined;
  /** The client's verified certificate when the listener requires one. */
  readonly certificate: PeerCertificate | undefined;
}

/**
 * Decides whether `peer` may act as `node` and which snapshot key it is served. Throwing (or
 * rejecting) refuses the stream with PERMISSION_DENIED: authorization fails closed. The identity
 * layer plugs its certificate-to-workload check in here.
 */
export type NodeAuthorizer = (node: NodeInfo, peer: StreamPeer) => string | Promise<string>;

/** The default: the node id is the key, trusted as claimed (only right where transport auth already decided). */
export const trustClaimedNodeId: NodeAuthorizer = (node) => node.id;

export interface AdsServerOptions {
  readonly cache: SnapshotCache;
  readonly registry: TypeRegistry;
  readonly authorize?: NodeAuthorizer;
  /** Where warnings go (a pino logger fits); by default Node's process warnings on stderr. */
  readonly log?: XdsWarnLog;
  /**
   * How long a stream's responses may wait in the transport without any of them being taken by
   * the client before the stream is ended with DEADLINE_EXCEEDED (default DEFAULT_SEND_TIMEOUT_MS).
   */
  readonly sendTimeoutMs?: number;
}

/** A client that takes nothing it is sent for this long is not going to: its stream is ended. */
export const DEFAULT_SEND_TIMEOUT_MS = 30_000;

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

/** A stream subscribed to a resource type the registry does not hold (once per stream and type). */
export interface UnservedEvent {
  readonly nodeId: string;
  readonly typeUrl: string;
  readonly protocol: "sotw" | "delta";
}

export interface AdsServerEvents {
  ack: [AckEvent];
  nack: [NackEvent];
  "stream-open": [StreamEvent];
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

type SotwCall = grpc.ServerDuplexStream<SotwRequest, Buffer>;
type DeltaCall = grpc.ServerDuplexStream<DeltaRequest, Buffer>;

class ProtocolError extends Error {
  constructor(
    readonly code: grpc.status,
    message: string,
  ) {
    super(message);
  }
}

/**
 * Envoy's Aggregated Discovery Service over a snapshot cache: state of the world and delta, ACK and
 * NACK per type by nonce, stale nonces ignored, nothing resent after a NACK until the snapshot
 * changes. Register with `server.addService(ads.definition, ads.implementation)`.
 */
export class AdsServer extends EventEmitter<AdsServerEvents> {
  readonly definition = adsServiceDefinition;
  readonly implementation: grpc.UntypedServiceImplementation;
  private readonly authorize: NodeAuthorizer;
  private readonly log: XdsWarnLog;
  private readonly live = new Set<SotwStream | DeltaStream>();
  /** Streams whose snapshot changed and that have not been served it yet, in the order they changed. */
  private readonly pushQueue = new Set<BaseStream>();
  /** Nonces are numbered server-wide, so a response encoded once can carry the same nonce on many streams. */
  private nonceCounter = 0;
  /** The last full-set state-of-the-world response encoded per resource set, shared by every wildcard stream. */
  private readonly sotwShared = new WeakMap<ResourceSet, SharedResponse>();
  /** The last delta response encoded towards each resource set, with the set it starts from. */
  private readonly deltaShared = new WeakMap<
    ResourceSet,
    { from: ResourceSet; response: SharedDelta | undefined }
  >();
  private readonly sendTimeoutMs: number;
  /** Looks for stalled streams while any stream is open; one timer for all of them. */
  private stallSweep: NodeJS.Timeout | undefined;

  constructor(private readonly options: AdsServerOptions) {
    super();
    this.setMaxListeners(0);
    this.authorize = options.authorize ?? trustClaimedNodeId;
    this.log = options.log ?? warnOnStderr;
    this.sendTimeoutMs = options.sendTimeoutMs ?? DEFAULT_SEND_TIMEOUT_MS;
    if (!Number.isFinite(this.sendTimeoutMs) || this.sendTimeoutMs < SWEEPS_PER_SEND_TIMEOUT)
      throw new Error(
        `sendTimeoutMs must be a number of milliseconds of at least ${SWEEPS_PER_SEND_TIMEOUT}, got ${this.sendTimeoutMs}`,
      );
    this.implementation = {
      StreamAggregatedResources: (call: SotwCall) => this.serve(call, "sotw"),
      DeltaAggregatedResources: (call: DeltaCall) => this.serve(call, "delta"),
    };
  }

  get streamCount(): number {
    return this.live.size;
  }

  /**
   * Queues a stream whose snapshot changed. The queue is drained in slices of at most
   * PUSH_SLICE_MS, yielding to the event loop between slices: a change that reaches tens of
   * thousands of streams then goes out while the first nodes' ACKs are already being read,
   * instead of one long synchronous burst that holds every response in memory before any of it
   * reaches a socket.
   */
  schedulePush(stream: BaseStream): void {
    this.pushQueue.add(stream);
    if (this.pushQueue.size === 1) setImmediate(this.drainPushes);
  }

  private readonly drainPushes = (): void => {
    const until = performance.now() + PUSH_SLICE_MS;
    let n = 0;
    for (const stream of this.pushQueue) {
      this.pushQueue.delete(stream);
      try {
        if (!stream.closed) stream.onSnapshot();
      } catch (err) {
        // One broken stream is ended with the error; the others still get the change.
        stream.fail(err);
      }
      // Checking the clock every few streams keeps its cost out of the loop.
      if (++n % 64 === 0 && performance.now() >= until) break;
    }
    if (this.pushQueue.size > 0) setImmediate(this.drainPushes);
  };

  /** A nonce no stream of this server has seen yet, greater than every earlier one. */
  nextNonce(): number {
    return ++this.nonceCounter;
  }

  /**
   * The whole of `set` as one state-of-the-world response, encoded once per change and written
   * to every wildcard stream that needs it. A stream may use it only if its nonce is above every
   * nonce the stream sent before (`after`), which keeps nonces unique and increasing per stream;
   * otherwise the stream gets a response of its own with a fresh nonce.
   */
  sotwResponse(set: ResourceSet, after: number): SharedResponse {
    const cached = this.sotwShared.get(set);
    if (cached && cached.nonce > after) return cached;
    const nonce = this.nextNonce();
    const response = {
      nonce,
      nonceText: nonceText(nonce),
      bytes: encodeSotwResponse(set.version, set.typeUrl, nonceText(nonce), set.sotwBody),
    };
    this.sotwShared.set(set, response);
    return response;
  }

  /**
   * The delta response that takes a plain wildcard subscriber holding exactly `from` to `to`,
   * encoded once and shared like `sotwResponse` (same nonce rule); undefined when nothing differs.
   */
  deltaResponse(from: ResourceSet, to: ResourceSet, after: number): SharedDelta | undefined {
    const cached = this.deltaShared.get(to);
    if (cached && cached.from === from && (cached.response === undefined || cached.response.nonce > after))
      return cached.response;
    const entries: Buffer[] = [];
    const updated: [string, string][] = [];
    const removed: string[] = [];
    for (const r of to.items.values()) {
      if (from.items.get(r.name)?.version === r.version) continue;
      entries.push(r.deltaEntry);
      updated.push([r.name, r.version]);
    }
    for (const name of from.items.keys()) if (!to.items.has(name)) removed.push(name);
    let response: SharedDelta | undefined;
    if (entries.length > 0 || removed.length > 0) {
      const nonce = this.nextNonce();
      const text = nonceText(nonce);
      response = {
        nonce,
        nonceText: text,
        bytes: encodeDeltaResponse(to.version, to.typeUrl, text, entries, removed),
        updated,
        removed,
      };
    }
    this.deltaShared.set(to, { from, response });
    return response;
  }

  /**
   * Ends every open stream for which `why` gives a reason, with PERMISSION_DENIED and that reason
   * (for example when the identity a stream was authorized as is withdrawn). Returns how many.
   */
  endStreams(why: (stream: StreamEvent) => string | undefined): number {
    let ended = 0;
    for (const stream of [...this.live]) {
      const reason = why({ nodeId: stream.nodeId, key: stream.key, protocol: stream.protocol });
      if (reason === undefined) continue;
      stream.fail(new ProtocolError(grpc.status.PERMISSION_DENIED, reason));
      ended++;
    }
    return ended;
  }

  /** Logs and announces a stream's first request for a type it will never be sent resources of. */
  noteUnserved(event: UnservedEvent): void {
    this.log.warn(
      { nodeId: event.nodeId, typeUrl: event.typeUrl, protocol: event.protocol },
      "resource type not served: answered as having no resources",
    );
    this.emit("unserved", event);
  }

  /**
   * Runs every sendTimeoutMs / SWEEPS_PER_SEND_TIMEOUT while streams are open. A stream whose
   * responses have waited in the transport through that many sweeps without the client taking
   * any is ended: it holds at most one response per type, but holds it for nothing. One timer
   * for all streams keeps the cost of a write that completes normally to a flag.
   */
  private readonly sweepStalled = (): void => {
    for (const stream of this.live) {
      if (!stream.stalledThroughSweep()) continue;
      const event: StreamEvent = { nodeId: stream.nodeId, key: stream.key, protocol: stream.protocol };
      this.log.warn(
        { ...event, sendTimeoutMs: this.sendTimeoutMs },
        "stream ended: the client took none of its responses within the send timeout",
      );
      stream.fail(
        new ProtocolError(
          grpc.status.DEADLINE_EXCEEDED,
          `node ${stream.nodeId} took none of the responses sent on its stream for ${this.sendTimeoutMs} ms: stream ended (${stream.waitingTypes().join(", ")} waiting)`,
        ),
      );
      this.emit("send-timeout", event);
    }
  };

  private track(stream: SotwStream | DeltaStream): void {
    this.live.add(stream);
    if (this.stallSweep) return;
    this.stallSweep = setInterval(this.sweepStalled, this.sendTimeoutMs / SWEEPS_PER_SEND_TIMEOUT);
    this.stallSweep.unref();
  }

  private untrack(stream: SotwStream | DeltaStream): void {
    this.live.delete(stream);
    if (this.live.size > 0 || !this.stallSweep) return;
    clearInterval(this.stallSweep);
    this.stallSweep = undefined;
  }

  /** Every open stream and where each of its types stands. */
  status(): StreamStatus[] {
    return [...this.live].map((s) => s.status());
  }

  private serve(call: SotwCall | DeltaCall, protocol: "sotw" | "delta"): void {
    let stream: SotwStream | DeltaStream | undefined;
    let starting: Promise<void> | undefined;
    let ended = false;
    const backlog: (SotwRequest | DeltaRequest)[] = [];
    const fail = (err: unknown) => {
      const code = err instanceof ProtocolError ? err.code : grpc.status.INTERNAL;
      call.emit("error", { code, details: err instanceof Error ? err.message : String(err) });
      call.end();
      stream?.close();
    };
    call.on("data", (req: SotwRequest | DeltaRequest) => {
      if (stream) {
        try {
          stream.handle(req as never);
        } catch (err) {
          fail(err);
        }
        return;
      }
      backlog.push(req);
      if (starting) return;
      // Nothing more is read until the node is authorized: a peer not trusted yet cannot make the
      // server buffer its requests (they wait at the peer, held back by gRPC's flow control).
      call.pause();
      starting = this.open(call, protocol, req).then(
        (s) => {
          if (ended) {
            // The client went away while it was being authorized.
            s.close();
            return;
          }
          stream = s;
          s.fail = fail;
          this.track(s);
          this.emit("stream-open", { nodeId: s.nodeId, key: s.key, protocol });
          // A listener may have ended it already (its identity was withdrawn meanwhile).
          if (s.closed) return;
          try {
            for (const r of backlog.splice(0)) s.handle(r as never);
          } catch (err) {
            fail(err);
            return;
          }
          // Handling the backlog may have deferred a response; reading then waits for it.
          if (!s.readsHeld) call.resume();
        },
        (err: unknown) => fail(err),
      );
    });
    const end = () => {
      ended = true;
      if (!stream) return;
      stream.close();
      this.untrack(stream);
      this.emit("stream-close", { nodeId: stream.nodeId, key: stream.key, protocol });
      stream = undefined;
    };
    call.on("end", () => {
      end();
      call.end();
    });
    call.on("cancelled", end);
    call.on("error", end);
    call.on("close", end);
  }

  private async open(
    call: SotwCall | DeltaCall,
    protocol: "sotw" | "delta",
    first: SotwRequest | DeltaRequest,
  ): Promise<SotwStream | DeltaStream> {
    if (!first.node)
      throw new ProtocolError(
        grpc.status.INVALID_ARGUMENT,
        "the first request of a stream must carry the node",
      );
    const node = nodeInfo(first.node);
    if (node.id === "") throw new ProtocolError(grpc.status.INVALID_ARGUMENT, "node.id is empty");
    const auth = call.getAuthContext();
    const peer: StreamPeer = {
      address: call.getPeer(),
      transportSecurity: auth.transportSecurityType,
      certificate:
        auth.sslPeerCertificate && Object.keys(auth.sslPeerCertificate).length > 0
          ? auth.sslPeerCertificate
          : undefined,
    };
    let key: string;
    try {
      key = await this.authorize(node, peer);
    } catch (err) {
      throw new ProtocolError(
        grpc.status.PERMISSION_DENIED,
        `node ${node.id} refused: ${err instanceof Error ? err.message : String(err)}`,
      );
    }
    const S = protocol === "sotw" ? SotwStream : DeltaStream;
    return new S(this, call as ResponseTransport, node.id, key, this.options);
  }
}

/** Longest stretch the push queue runs without letting the event loop read ACKs and flush sockets. */
const PUSH_SLICE_MS = 20;

/**
 * Sweeps for stalled streams per send timeout: a stream is ended between one and
 * 1 + 1/SWEEPS_PER_SEND_TIMEOUT send timeouts after the client last took a response.
 */
const SWEEPS_PER_SEND_TIMEOUT = 4;

interface SharedResponse {
  readonly nonce: number;
  readonly nonceText: string;
  readonly bytes: Buffer;
}

interface SharedDelta extends SharedResponse {
  /** What a client holds after applying it: names and versions sent, names removed. */
  readonly updated: readonly (readonly [string, string])[];
  readonly removed: readonly string[];
}

const nonceText = (n: number): string => n.toString(36);

/**
 * What a stream writes responses to. Its write callback runs once the transport has sent the
 * response on (HTTP/2 flow control let it out); until then the response is held in memory.
 */
type ResponseTransport = Pick<grpc.ServerDuplexStream<unknown, Buffer>, "write" | "pause" | "resume">;

/**
 * Per type: at most one response in the transport. A response due while the previous one is still
 * there is deferred, and computed from the state of the moment it can be sent: what the client is
 * sent when it reads again is the latest state, never every state in between.
 */
interface Outbox {
  inFlight: boolean;
  deferred: boolean;
}

/** Per-type state of a state-of-the-world stream. */
interface SotwTypeState extends Outbox {
  /** false: answered as having no resources, and never from the snapshot. */
  served: boolean;
  /** null = wildcard. */
  names: Set<string> | null;
  /** Whether the client ever named resources (after that, an empty list unsubscribes all). */
  explicit: boolean;
  lastSentVersion: string | undefined;
  /** Resources in the last response. */
  sentCount: number;
  nonce: string | undefined;
  answer: Answer;
  /** A deferred response is owed even if the version did not change (the names did). */
  forceDeferred: boolean;
}

/** How the node answered the last response of a type. */
interface Answer {
  ackedNonce: string | undefined;
  error: string | undefined;
}

function answerState(nonce: string | undefined, a: Answer): TypeStatus["state"] {
  if (nonce === undefined) return "idle";
  if (a.error !== undefined) return "nacked";
  return a.ackedNonce === nonce ? "acked" : "pending";
}

abstract class BaseStream {
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
    protected readonly server: AdsServer,
    private readonly call: ResponseTransport,
    readonly nodeId: string,
    readonly key: string,
    protected readonly options: AdsServerOptions,
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

class SotwStream extends BaseStream {
  readonly protocol = "sotw";
  protected readonly types = new Map<string, SotwTypeState>();

  handle(req: SotwRequest): void {
    const typeUrl = req.type_url;
    let state = this.types.get(typeUrl);
    const names = req.resource_names;
    if (!state) {
      const served = this.admitType(typeUrl);
      const wildcard = names.length === 0 || names.includes("*");
      state = {
        served,
        names: wildcard ? null : this.boundedNames(typeUrl, names),
        explicit: !wildcard,
        lastSentVersion: req.version_info === "" ? undefined : req.version_info,
        sentCount: 0,
        nonce: undefined,
        answer: { ackedNonce: undefined, error: undefined },
        inFlight: false,
        deferred: false,
        forceDeferred: false,
      };
      this.types.set(typeUrl, state);
      this.respond(typeUrl, state, false);
      return;
    }
    if (req.response_nonce !== (state.nonce ?? "")) {
      this.server.emit("stale", {
        nodeId: this.nodeId,
        typeUrl,
        version: req.version_info,
        nonce: req.response_nonce,
      });
      return;
    }
    if (req.response_nonce === "") {
      // A subscription change before the first response: nothing to ACK or NACK.
    } else if (req.error_detail) {
      state.answer.error = req.error_detail.message || "rejected without detail";
      this.server.emit("nack", {
        nodeId: this.nodeId,
        typeUrl,
        version: state.lastSentVersion ?? "",
        nonce: req.response_nonce,
        errorDetail: req.error_detail.message,
      });
    } else {
      state.answer.ackedNonce = req.response_nonce;
      state.answer.error = undefined;
      this.server.emit("ack", {
        nodeId: this.nodeId,
        typeUrl,
        version: req.version_info,
        nonce: req.response_nonce,
      });
    }
    const changed = this.updateNames(typeUrl, state, names);
    this.respond(typeUrl, state, changed);
  }

  /** The names of a request as the set the stream keeps, within the bounds on names. */
  private boundedNames(typeUrl: string, names: readonly string[]): Set<string> {
    for (const n of names) this.checkName(typeUrl, n);
    const set = new Set(names);
    this.checkNameCount(typeUrl, set.size);
    return set;
  }

  protected typeStatus(): TypeStatus[] {
    return [...this.types].map(([typeUrl, t]) => ({
      typeUrl,
      served: t.served,
      subscription: t.names === null ? "*" : [...t.names],
      resources: t.sentCount,
      version: t.lastSentVersion,
      state: answerState(t.nonce, t.answer),
      error: t.answer.error,
      deferred: t.deferred,
    }));
  }

  private updateNames(typeUrl: string, state: SotwTypeState, names: string[]): boolean {
    if (names.includes("*")) {
      const changed = state.names !== null;
      state.names = null;
      return changed;
    }
    if (names.length === 0 && !state.explicit) return false;
    const next = this.boundedNames(typeUrl, names);
    const prev = state.names;
    state.explicit = true;
    state.names = next;
    if (!prev || prev.size !== next.size) return true;
    for (const n of next) if (!prev.has(n)) return true;
    return false;
  }

  onSnapshot(): void {
    for (const [typeUrl, state] of this.types) this.respond(typeUrl, state, false);
  }

  protected answerDeferred(typeUrl: string): void {
    const state = this.types.get(typeUrl);
    if (!state) return;
    const force = state.forceDeferred;
    state.forceDeferred = false;
    this.respond(typeUrl, state, force);
  }

  /** Sends the subscribed subset when it differs from what was last sent (or the subscription changed). */
  private respond(typeUrl: string, state: SotwTypeState, force: boolean): void {
    if (this.mustDefer(state)) {
      state.forceDeferred ||= force;
      return;
    }
    if (!state.served) {
      this.respondNothing(typeUrl, state, force);
      return;
    }
    const set = this.snapshot.set(typeUrl);
    if (state.names === null) {
      if (!force && set.version === state.lastSentVersion) return;
      const shared = this.server.sotwResponse(set, this.lastNonce);
      this.lastNonce = shared.nonce;
      this.sent(state, set.version, shared.nonceText, set.items.size);
      this.send(typeUrl, state, shared.bytes);
      return;
    }
    const subset = pick(set, state.names);
    const version = versionOf(subset);
    if (!force && version === state.lastSentVersion) return;
    const nonce = this.nextNonce();
    this.sent(state, version, nonce, subset.length);
    const body = Buffer.concat(subset.map((r) => r.sotwEntry));
    this.send(typeUrl, state, encodeSotwResponse(version, typeUrl, nonce, body));
  }

  /**
   * An unserved type gets an empty response, as a served type with no resources would: for a
   * wildcard subscription that tells the client there are none (Envoy finishes initializing it at
   * once); a named one is ACKed and, as for any name absent from a response, left to the client's
   * own timeout. Sent on subscribing and on a change of names; the snapshot never changes it.
   */
  private respondNothing(typeUrl: string, state: SotwTypeState, force: boolean): void {
    if (!force && state.lastSentVersion === NOTHING_VERSION) return;
    const nonce = this.nextNonce();
    this.sent(state, NOTHING_VERSION, nonce, 0);
    this.send(typeUrl, state, encodeSotwResponse(NOTHING_VERSION, typeUrl, nonce, NO_RESOURCES));
  }

  private sent(state: SotwTypeState, version: string, nonce: string, count: number): void {
    state.sentCount = count;
    state.lastSentVersion = version;
    state.nonce = nonce;
  }
}

const NO_RESOURCES = Buffer.alloc(0);

function pick(set: ResourceSet, names: Set<string>) {
  const out = [];
  for (const n of names) {
    const r = set.items.get(n);
    if (r) out.push(r);
  }
  return out;
}

/** Per-type state of a delta stream. */
interface DeltaTypeState extends Outbox {
  /** false: every name is answered as not existing, and never from the snapshot. */
  served: boolean;
  wildcard: boolean;
  names: Set<string>;
  /** What the client holds: name → version; "" = told it does not exist. */
  known: Map<string, string>;
  /**
   * The set `known` mirrors exactly (every resource at its version, nothing else), while the
   * stream is a plain wildcard subscription; lets a change use the server's shared response.
   */
  mirror: ResourceSet | undefined;
  nonce: string | undefined;
  answer: Answer;
  /** Unserved type: names to answer as not existing in its next response. */
  absent: Set<string>;
}

/**
 * A wildcard subscription not answered yet on this stream is answered even when there is nothing
 * to send: Envoy finishes initializing a wildcard subscription (CDS, LDS) only on its first
 * response, and would otherwise wait out its initial_fetch_timeout (forever when that is 0).
 */
function awaitsFirstAnswer(state: DeltaTypeState): boolean {
  return state.wildcard && state.nonce === undefined;
}

class DeltaStream extends BaseStream {
  readonly protocol = "delta";
  protected readonly types = new Map<string, DeltaTypeState>();

  handle(req: DeltaRequest): void {
    const typeUrl = req.type_url;
    let state = this.types.get(typeUrl);
    const first = !state;
    if (!state) {
      const served = this.admitType(typeUrl);
      state = {
        served,
        // A first request without names subscribes to every resource of the type.
        wildcard: req.resource_names_subscribe.length === 0,
        names: new Set(),
        // What the client says it holds of an unserved type is answered, not kept.
        known: served ? new Map(Object.entries(req.initial_resource_versions)) : new Map(),
        mirror: undefined,
        nonce: undefined,
        answer: { ackedNonce: undefined, error: undefined },
        absent: new Set(),
        inFlight: false,
        deferred: false,
      };
      this.types.set(typeUrl, state);
      this.subscribe(typeUrl, state, req.resource_names_subscribe);
    } else {
      if (req.resource_names_subscribe.length > 0 || req.resource_names_unsubscribe.length > 0)
        state.mirror = undefined;
      this.subscribe(typeUrl, state, req.resource_names_subscribe);
      for (const n of req.resource_names_unsubscribe) {
        if (n === "*") state.wildcard = false;
        else state.names.delete(n);
      }
    }
    // Counted once the request is applied: one request may unsubscribe a name and subscribe another.
    this.checkNameCount(typeUrl, state.names.size);
    if (req.response_nonce !== "") {
      if (req.response_nonce !== state.nonce) {
        this.server.emit("stale", { nodeId: this.nodeId, typeUrl, version: "", nonce: req.response_nonce });
      } else if (req.error_detail) {
        state.answer.error = req.error_detail.message || "rejected without detail";
        this.server.emit("nack", {
          nodeId: this.nodeId,
          typeUrl,
          version: "",
          nonce: req.response_nonce,
          errorDetail: req.error_detail.message,
        });
      } else {
        state.answer.ackedNonce = req.response_nonce;
        state.answer.error = undefined;
        this.server.emit("ack", { nodeId: this.nodeId, typeUrl, version: "", nonce: req.response_nonce });
      }
    }
    this.dropUnsubscribed(state);
    if (state.served) this.respond(typeUrl, state);
    else this.respondNothing(typeUrl, state, req, first);
  }

  protected typeStatus(): TypeStatus[] {
    return [...this.types].map(([typeUrl, t]) => {
      let held = 0;
      for (const v of t.known.values()) if (v !== "") held++;
      return {
        typeUrl,
        served: t.served,
        subscription: t.wildcard ? "*" : [...t.names],
        resources: held,
        version: undefined,
        state: answerState(t.nonce, t.answer),
        error: t.answer.error,
        deferred: t.deferred,
      };
    });
  }

  /** Adds subscribed names ("*": every resource of the type), each within the bound on length. */
  private subscribe(typeUrl: string, state: DeltaTypeState, names: readonly string[]): void {
    for (const n of names) {
      if (n === "*") {
        state.wildcard = true;
        continue;
      }
      this.checkName(typeUrl, n);
      state.names.add(n);
    }
  }

  /** Names the client no longer wants are forgotten without a response (it drops them itself). */
  private dropUnsubscribed(state: DeltaTypeState): void {
    if (state.wildcard) return;
    for (const n of state.known.keys()) if (!state.names.has(n)) state.known.delete(n);
  }

  onSnapshot(): void {
    for (const [typeUrl, state] of this.types) if (state.served) this.respond(typeUrl, state);
  }

  protected answerDeferred(typeUrl: string): void {
    const state = this.types.get(typeUrl);
    if (!state) return;
    if (state.served) this.respond(typeUrl, state);
    else this.sendNothing(typeUrl, state);
  }

  /**
   * An unserved type: every name the request subscribes to, or that the client says it already
   * holds, comes back in removed_resources (delta's "does not exist", which lets Envoy finish
   * warming without its fetch timeout); a wildcard subscription not answered yet gets one empty
   * response, so the client knows it was heard and that there is nothing. Unsubscribing needs no
   * answer.
   */
  private respondNothing(typeUrl: string, state: DeltaTypeState, req: DeltaRequest, first: boolean): void {
    for (const name of req.resource_names_subscribe) if (name !== "*") state.absent.add(name);
    if (first) for (const name of Object.keys(req.initial_resource_versions)) state.absent.add(name);
    this.sendNothing(typeUrl, state);
  }

  /** The names of an unserved type not answered yet, as removed; kept while a response is deferred. */
  private sendNothing(typeUrl: string, state: DeltaTypeState): void {
    if (state.absent.size === 0 && !awaitsFirstAnswer(state)) return;
    if (this.mustDefer(state)) return;
    const nonce = this.nextNonce();
    state.nonce = nonce;
    this.send(typeUrl, state, encodeDeltaResponse(NOTHING_VERSION, typeUrl, nonce, [], [...state.absent]));
    state.absent.clear();
  }

  /**
   * Sends what differs between what the client was sent (`known`, `mirror`: updated as each
   * response is handed to the transport) and the snapshot, so a response deferred behind a slow
   * one carries every change since, and only those.
   */
  private respond(typeUrl: string, state: DeltaTypeState): void {
    if (this.mustDefer(state)) return;
    const set = this.snapshot.set(typeUrl);
    const plain = state.wildcard && state.names.size === 0;
    if (plain && state.mirror) {
      if (state.mirror === set) return;
      const shared = this.server.deltaResponse(state.mirror, set, this.lastNonce);
      state.mirror = set;
      if (!shared) return;
      for (const [name, version] of shared.updated) state.known.set(name, version);
      for (const name of shared.removed) state.known.delete(name);
      this.lastNonce = shared.nonce;
      state.nonce = shared.nonceText;
      this.send(typeUrl, state, shared.bytes);
      return;
    }
    // After a full answer to a plain wildcard subscription the client holds exactly `set`.
    if (plain) state.mirror = set;
    const entries: Buffer[] = [];
    const removed: string[] = [];
    const offer = (name: string) => {
      const r = set.items.get(name);
      const held = state.known.get(name);
      if (r) {
        if (held !== r.version) {
          entries.push(r.deltaEntry);
          state.known.set(name, r.version);
        }
      } else if (held !== "") {
        // Held and now gone, or named and never existed: tell the client it does not exist.
        if (held !== undefined || !state.wildcard) removed.push(name);
        if (state.names.has(name)) state.known.set(name, "");
        else state.known.delete(name);
      }
    };
    if (state.wildcard) for (const name of set.items.keys()) offer(name);
    for (const name of state.names) offer(name);
    // Deleting or re-setting existing keys while iterating a Map is safe and visits each key once.
    for (const name of state.known.keys()) if (!set.items.has(name)) offer(name);
    if (entries.length === 0 && removed.length === 0 && !awaitsFirstAnswer(state)) return;
    const nonce = this.nextNonce();
    state.nonce = nonce;
    this.send(typeUrl, state, encodeDeltaResponse(set.version, typeUrl, nonce, entries, removed));
  }
}
