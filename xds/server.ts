import { EventEmitter } from "node:events";
import type { PeerCertificate } from "node:tls";
import * as grpc from "@grpc/grpc-js";
import { DeltaStream } from "./delta.ts";
import type { ResourceSet } from "./snapshot.ts";
import { SotwStream } from "./sotw.ts";
import {
  ProtocolError,
  SWEEPS_PER_SEND_TIMEOUT,
  nonceText,
  type AdsServerEvents,
  type BaseStream,
  type ResponseTransport,
  type SharedDelta,
  type SharedResponse,
  type OpenStreamEvent,
  type StreamEvent,
  type StreamOptions,
  type StreamStatus,
  type UnservedEvent,
} from "./stream.ts";
import { warnOnStderr, type XdsWarnLog } from "./unserved.ts";
import {
  adsServiceDefinition,
  encodeDeltaResponse,
  encodeSotwResponse,
  nodeInfo,
  type DeltaRequest,
  type NodeInfo,
  type SotwRequest,
} from "./wire.ts";

export type {
  AckEvent,
  AdsServerEvents,
  NackEvent,
  StreamEvent,
  StreamStatus,
  TypeStatus,
  UnservedEvent,
} from "./stream.ts";

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
/** Refuses with PERMISSION_DENIED by throwing, or with another status by throwing a ProtocolError. */
export type NodeAuthorizer = (node: NodeInfo, peer: StreamPeer) => string | Promise<string>;

/** How `endStreams` ends a stream when PERMISSION_DENIED is not the status to end it with. */
export interface StreamEnd {
  readonly code: grpc.status;
  readonly details: string;
}

/** The default: the node id is the key, trusted as claimed (only right where transport auth already decided). */
export const trustClaimedNodeId: NodeAuthorizer = (node) => node.id;

export interface AdsServerOptions extends StreamOptions {
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

type SotwCall = grpc.ServerDuplexStream<SotwRequest, Buffer>;
type DeltaCall = grpc.ServerDuplexStream<DeltaRequest, Buffer>;

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
  /** The client certificate each stream's connection presented. */
  private readonly certificates = new WeakMap<SotwStream | DeltaStream, PeerCertificate | undefined>();
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
   * Ends every open stream for which `why` gives a reason: a text ends it with PERMISSION_DENIED and
   * that text (the identity a stream was authorized as is withdrawn), a StreamEnd with its own
   * status (UNAUTHENTICATED: the certificate its connection presented is no longer accepted).
   * Returns how many.
   */
  endStreams(why: (stream: OpenStreamEvent) => string | StreamEnd | undefined): number {
    let ended = 0;
    for (const stream of [...this.live]) {
      const reason = why(this.openEvent(stream));
      if (reason === undefined) continue;
      stream.fail(
        typeof reason === "string"
          ? new ProtocolError(grpc.status.PERMISSION_DENIED, reason)
          : new ProtocolError(reason.code, reason.details),
      );
      ended++;
    }
    return ended;
  }

  private openEvent(stream: SotwStream | DeltaStream): OpenStreamEvent {
    return {
      nodeId: stream.nodeId,
      key: stream.key,
      protocol: stream.protocol,
      certificate: this.certificates.get(stream),
    };
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
          this.emit("stream-open", this.openEvent(s));
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
      // An authorizer that chose the status (UNAUTHENTICATED for a credential refused) keeps it.
      if (err instanceof ProtocolError) throw err;
      throw new ProtocolError(
        grpc.status.PERMISSION_DENIED,
        `node ${node.id} refused: ${err instanceof Error ? err.message : String(err)}`,
      );
    }
    const S = protocol === "sotw" ? SotwStream : DeltaStream;
    const stream = new S(this, call as ResponseTransport, node.id, key, this.options);
    this.certificates.set(stream, peer.certificate);
    return stream;
  }
}

/** Longest stretch the push queue runs without letting the event loop read ACKs and flush sockets. */
const PUSH_SLICE_MS = 20;
