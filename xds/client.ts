import { createHash } from "node:crypto";
import { EventEmitter } from "node:events";
import * as grpc from "@grpc/grpc-js";
import { Backoff, DEFAULT_BACKOFF, type BackoffOptions } from "./backoff.ts";
import { ReplicaOrder } from "./replica-order.ts";
import type { TypeRegistry } from "./registry.ts";
import {
  adsServiceDefinition,
  nodeToWire,
  type AnyWire,
  type DeltaResponse,
  type NodeSpec,
  type SotwResponse,
} from "./wire.ts";

export interface DecodedResource {
  readonly name: string;
  /** Server's per-resource version (delta) or the content hash (state of the world). */
  readonly version: string;
  readonly message: Record<string, unknown>;
}

/** The state a handler is asked to accept: the full set of resources of a type after this response. */
export interface TypeUpdate {
  readonly typeUrl: string;
  readonly resources: ReadonlyMap<string, DecodedResource>;
  /** Names added or changed by this response. */
  readonly changed: readonly string[];
  readonly removed: readonly string[];
}

/** Accepts (returns) or rejects (throws) a new state; a throw becomes a NACK carrying its message. */
export type TypeHandler = (update: TypeUpdate) => void;

export interface XdsClientOptions {
  /**
   * `host:port` of the control plane, or several replicas: the client starts on a random one (so
   * sidecars spread) and moves on whenever its stream ends, in an order of its own (`ReplicaOrder`:
   * the sidecars of a lost replica spread over the survivors), resuming with what it holds.
   */
  readonly target: string | readonly string[];
  /** Index of the replica to try first; default random. */
  readonly firstTarget?: number;
  readonly credentials: grpc.ChannelCredentials;
  readonly channelOptions?: grpc.ChannelOptions;
  readonly node: NodeSpec;
  readonly protocol: "sotw" | "delta";
  readonly registry: TypeRegistry;
  readonly backoff?: BackoffOptions;
}

export interface ClientAckEvent {
  readonly typeUrl: string;
  readonly version: string;
  readonly nonce: string;
}
export interface ClientNackEvent extends ClientAckEvent {
  readonly error: string;
}

export interface XdsClientEvents {
  connected: [];
  disconnected: [{ code: number; details: string; retryInMs: number }];
  ack: [ClientAckEvent];
  nack: [ClientNackEvent];
  update: [TypeUpdate];
}

interface Subscription {
  /** null = wildcard. */
  names: Set<string> | null;
  handler: TypeHandler | undefined;
  /** Last accepted state: kept through NACKs and disconnects. */
  accepted: Map<string, DecodedResource>;
  /** State of the world: version_info of the last accepted response. */
  version: string;
  /** Nonce of the last response received on the current stream. */
  nonce: string;
}

type Stream = grpc.ClientDuplexStream<object, SotwResponse | DeltaResponse>;

const INVALID_ARGUMENT = 3;

/**
 * An ADS client: one stream carrying every subscribed type, reconnecting with exponential backoff
 * and jitter, resubscribing with what it already holds, and keeping the last accepted state of
 * each type through NACKs and disconnects.
 */
export class XdsClient extends EventEmitter<XdsClientEvents> {
  private readonly targets: readonly string[];
  private readonly grpcClients = new Map<string, grpc.Client>();
  private readonly order: ReplicaOrder;
  private readonly subs = new Map<string, Subscription>();
  private readonly backoff: Backoff;
  private stream: Stream | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private closed = false;
  private sentNode = false;

  constructor(private readonly options: XdsClientOptions) {
    super();
    this.targets = typeof options.target === "string" ? [options.target] : [...options.target];
    if (this.targets.length === 0) throw new Error("no control-plane target given");
    this.order = new ReplicaOrder(this.targets.length, options.firstTarget);
    this.backoff = new Backoff(options.backoff ?? DEFAULT_BACKOFF);
  }

  /** Subscribes to a type: `names` omitted = every resource the server has for this node. */
  subscribe(typeUrl: string, opts: { names?: readonly string[]; handler?: TypeHandler } = {}): void {
    if (!this.options.registry.has(typeUrl))
      throw new Error(`cannot subscribe to unregistered type ${typeUrl}`);
    if (this.subs.has(typeUrl)) throw new Error(`already subscribed to ${typeUrl}`);
    const sub: Subscription = {
      names: opts.names ? new Set(opts.names) : null,
      handler: opts.handler,
      accepted: new Map(),
      version: "",
      nonce: "",
    };
    this.subs.set(typeUrl, sub);
    if (this.stream) this.sendInitial(typeUrl, sub);
  }

  /** Replaces the named subscription of a type. */
  setNames(typeUrl: string, names: readonly string[]): void {
    const sub = this.requireSub(typeUrl);
    const previous = sub.names;
    sub.names = new Set(names);
    if (!this.stream) return;
    if (this.options.protocol === "sotw") {
      this.send({
        type_url: typeUrl,
        version_info: sub.version,
        response_nonce: sub.nonce,
        resource_names: [...sub.names],
      });
    } else {
      const before = previous ?? new Set<string>(["*"]);
      this.send({
        type_url: typeUrl,
        resource_names_subscribe: [...sub.names].filter((n) => !before.has(n)),
        resource_names_unsubscribe: [...before].filter((n) => !sub.names?.has(n)),
      });
    }
  }

  /** The last accepted resources of a type. */
  resources(typeUrl: string): ReadonlyMap<string, DecodedResource> {
    return this.requireSub(typeUrl).accepted;
  }

  get connected(): boolean {
    return this.stream !== undefined;
  }

  /** The replica the current (or next) stream goes to. */
  get target(): string {
    return this.targets[this.order.current] as string;
  }

  private clientFor(target: string): grpc.Client {
    let client = this.grpcClients.get(target);
    if (!client) {
      client = new grpc.Client(target, this.options.credentials, this.options.channelOptions);
      this.grpcClients.set(target, client);
    }
    return client;
  }

  start(): void {
    if (this.closed) throw new Error("client is closed");
    if (!this.stream && !this.retryTimer) this.connect();
  }

  /**
   * Moves to new connections: a connection keeps the client certificate it was opened with, so after
   * the certificate changed because the server stopped accepting the old one, its channels are
   * closed and the next stream opens a new one (presenting what the credentials hold now). A stream
   * open now is replaced at once; one waiting to reconnect keeps its backoff.
   */
  renewConnections(): void {
    if (this.closed) return;
    const stream = this.stream;
    this.stream = undefined;
    stream?.cancel();
    for (const client of this.grpcClients.values()) client.close();
    this.grpcClients.clear();
    if (stream && !this.retryTimer) this.connect();
  }

  close(): void {
    this.closed = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    const stream = this.stream;
    this.stream = undefined;
    stream?.cancel();
    for (const client of this.grpcClients.values()) client.close();
  }

  private requireSub(typeUrl: string): Subscription {
    const sub = this.subs.get(typeUrl);
    if (!sub) throw new Error(`not subscribed to ${typeUrl}`);
    return sub;
  }

  private connect(): void {
    this.retryTimer = undefined;
    const def =
      this.options.protocol === "sotw"
        ? adsServiceDefinition.StreamAggregatedResources
        : adsServiceDefinition.DeltaAggregatedResources;
    if (!def) throw new Error("ADS definition incomplete");
    const stream = this.clientFor(this.target).makeBidiStreamRequest(
      def.path,
      def.requestSerialize as (v: object) => Buffer,
      def.responseDeserialize as (b: Buffer) => SotwResponse | DeltaResponse,
    );
    this.stream = stream;
    this.sentNode = false;
    let announced = false;
    stream.on("data", (msg: SotwResponse | DeltaResponse) => {
      if (!announced) {
        announced = true;
        this.backoff.reset();
      }
      if (this.options.protocol === "sotw") this.onSotw(msg as SotwResponse);
      else this.onDelta(msg as DeltaResponse);
    });
    stream.on("metadata", () => this.emit("connected"));
    stream.on("error", () => {
      // The status event that follows carries the reason; errors must not escape as unhandled.
    });
    stream.on("status", (status: grpc.StatusObject) => {
      if (this.stream !== stream) return;
      this.stream = undefined;
      for (const sub of this.subs.values()) sub.nonce = "";
      if (this.closed) return;
      this.order.advance();
      const retryInMs = this.backoff.next();
      this.emit("disconnected", { code: status.code, details: status.details, retryInMs });
      this.retryTimer = setTimeout(() => this.connect(), retryInMs);
    });
    for (const [typeUrl, sub] of this.subs) this.sendInitial(typeUrl, sub);
  }

  private sendInitial(typeUrl: string, sub: Subscription): void {
    if (this.options.protocol === "sotw") {
      this.send({
        type_url: typeUrl,
        version_info: sub.version,
        resource_names: sub.names ? [...sub.names] : [],
      });
    } else {
      this.send({
        type_url: typeUrl,
        resource_names_subscribe: sub.names ? [...sub.names] : ["*"],
        initial_resource_versions: Object.fromEntries(
          [...sub.accepted.values()].map((r) => [r.name, r.version]),
        ),
      });
    }
  }

  private send(request: Record<string, unknown>): void {
    if (!this.stream) return;
    if (!this.sentNode) {
      request.node = nodeToWire(this.options.node);
      this.sentNode = true;
    }
    this.stream.write(request);
  }

  private onSotw(res: SotwResponse): void {
    const sub = this.subs.get(res.type_url);
    if (!sub) return;
    sub.nonce = res.nonce;
    const names = sub.names ? [...sub.names] : [];
    let update: TypeUpdate;
    try {
      const incoming = new Map<string, DecodedResource>();
      for (const any of res.resources) {
        const r = this.decodeAny(res.type_url, any, undefined);
        if (incoming.has(r.name)) throw new Error(`resource ${r.name} appears twice`);
        incoming.set(r.name, r);
      }
      const fullState = this.options.registry.spec(res.type_url)?.sotwFullState ?? true;
      update = diff(res.type_url, sub.accepted, incoming, fullState);
      sub.handler?.(update);
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      this.send({
        type_url: res.type_url,
        version_info: sub.version,
        response_nonce: res.nonce,
        resource_names: names,
        error_detail: { code: INVALID_ARGUMENT, message },
      });
      this.emit("nack", {
        typeUrl: res.type_url,
        version: res.version_info,
        nonce: res.nonce,
        error: message,
      });
      return;
    }
    sub.accepted = new Map(update.resources);
    sub.version = res.version_info;
    this.send({
      type_url: res.type_url,
      version_info: res.version_info,
      response_nonce: res.nonce,
      resource_names: names,
    });
    this.emit("ack", { typeUrl: res.type_url, version: res.version_info, nonce: res.nonce });
    this.emit("update", update);
  }

  private onDelta(res: DeltaResponse): void {
    const sub = this.subs.get(res.type_url);
    if (!sub) return;
    sub.nonce = res.nonce;
    let update: TypeUpdate;
    try {
      const next = new Map(sub.accepted);
      const changed: string[] = [];
      for (const r of res.resources) {
        if (!r.resource) throw new Error(`resource ${r.name} has no body`);
        const decoded = this.decodeAny(res.type_url, r.resource, r.version);
        if (decoded.name !== r.name) throw new Error(`resource named ${r.name} carries ${decoded.name}`);
        next.set(r.name, decoded);
        changed.push(r.name);
      }
      const removed = res.removed_resources.filter((n) => next.delete(n));
      update = { typeUrl: res.type_url, resources: next, changed, removed };
      sub.handler?.(update);
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      this.send({
        type_url: res.type_url,
        response_nonce: res.nonce,
        error_detail: { code: INVALID_ARGUMENT, message },
      });
      this.emit("nack", {
        typeUrl: res.type_url,
        version: res.system_version_info,
        nonce: res.nonce,
        error: message,
      });
      return;
    }
    sub.accepted = new Map(update.resources);
    this.send({ type_url: res.type_url, response_nonce: res.nonce });
    this.emit("ack", { typeUrl: res.type_url, version: res.system_version_info, nonce: res.nonce });
    this.emit("update", update);
  }

  private decodeAny(typeUrl: string, any: AnyWire, version: string | undefined): DecodedResource {
    if (any.type_url !== typeUrl) throw new Error(`response of type ${typeUrl} carries a ${any.type_url}`);
    const { name, message } = this.options.registry.decode(typeUrl, any.value);
    const v =
      version ??
      createHash("sha256").update(typeUrl).update("\0").update(any.value).digest("base64url").slice(0, 22);
    return { name, version: v, message };
  }
}

function diff(
  typeUrl: string,
  current: ReadonlyMap<string, DecodedResource>,
  incoming: ReadonlyMap<string, DecodedResource>,
  fullState: boolean,
): TypeUpdate {
  const next = fullState ? new Map(incoming) : new Map([...current, ...incoming]);
  const changed = [...incoming.values()]
    .filter((r) => current.get(r.name)?.version !== r.version)
    .map((r) => r.name);
  const removed = fullState ? [...current.keys()].filter((n) => !incoming.has(n)) : [];
  return { typeUrl, resources: next, changed, removed };
}
