import { connect, constants, type ClientHttp2Session, type ClientHttp2Stream } from "node:http2";
import protobuf from "protobufjs";
import { xdsRoot } from "../../xds/protos.ts";
import { PEER_DIRECTORY, POLICY_SET, REVOCATION_LIST, TRUST_BUNDLE } from "../../xds/type-urls.ts";
import { nodeToWire } from "../../xds/wire.ts";
import { Backoff, DEFAULT_BACKOFF } from "../../xds/backoff.ts";
import { ReplicaOrder } from "../../xds/replica-order.ts";
import { now } from "./children.ts";
import { nodeId } from "./fixtures.ts";

/**
 * Simulated sidecars, as cheap as a load generator can be while still speaking the real protocol:
 * each one is a gRPC stream (HTTP/2 over TLS, length-prefixed messages, grpc-status trailers) to
 * the ADS service that subscribes to Sigil's four types and ACKs every response with its
 * type_url, version and nonce. Responses are not decoded beyond those top-level fields: the
 * resources are skipped over, so one process carries tens of thousands of streams. Many streams
 * share one HTTP/2 connection; several of these processes split the node range.
 *
 * Given several replicas, a stream that ends reconnects as the sidecar's xDS client does: to the
 * next replica in its own `ReplicaOrder`, after the client's exponential backoff with jitter, asking for the full
 * state again. "watch-failover" names a replica about to be killed; once every stream that was on
 * it holds all four types from another replica, "failed-over" says when.
 */

interface Start {
  kind: "start";
  /** The control plane's port, or one per replica: node i opens its stream to replica i mod n. */
  ports: number[];
  /** The serving certificate of each entry of `ports`. */
  certPems: string[];
  /** Node indices [first, first + count). */
  first: number;
  count: number;
  perConnection: number;
  protocol: "sotw" | "delta";
}

const TYPES = [TRUST_BUNDLE, PEER_DIRECTORY, REVOCATION_LIST, POLICY_SET];
const root = xdsRoot();
const Req = root.lookupType("envoy.service.discovery.v3.DiscoveryRequest");
const DReq = root.lookupType("envoy.service.discovery.v3.DeltaDiscoveryRequest");
const send = (msg: unknown) => process.send?.(msg);
const SOTW_PATH = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
const DELTA_PATH = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";

/** The top-level fields of a (Delta)DiscoveryResponse that an ACK needs. */
interface ResponseHead {
  version: string;
  typeUrl: string;
  nonce: string;
}

/**
 * Reads version (field 1), type_url (4) and nonce (5), which sit at the same numbers in both
 * response messages, and skips everything else by wire type.
 */
function readHead(buf: Uint8Array): ResponseHead {
  const r = protobuf.Reader.create(buf);
  const head: ResponseHead = { version: "", typeUrl: "", nonce: "" };
  while (r.pos < r.len) {
    const tag = r.uint32();
    const field = tag >>> 3;
    if (field === 1) head.version = r.string();
    else if (field === 4) head.typeUrl = r.string();
    else if (field === 5) head.nonce = r.string();
    else r.skipType(tag & 7);
  }
  return head;
}

/** An ACK: DiscoveryRequest {version_info=1, type_url=4, response_nonce=5} or DeltaDiscoveryRequest {type_url=2, response_nonce=6}. */
function ack(sotw: boolean, head: ResponseHead): Uint8Array {
  const w = protobuf.Writer.create();
  if (sotw) {
    w.uint32((1 << 3) | 2).string(head.version);
    w.uint32((4 << 3) | 2).string(head.typeUrl);
    w.uint32((5 << 3) | 2).string(head.nonce);
  } else {
    w.uint32((2 << 3) | 2).string(head.typeUrl);
    w.uint32((6 << 3) | 2).string(head.nonce);
  }
  return w.finish();
}

/** gRPC length-prefixed message: uncompressed flag, 4-byte big-endian length, bytes. */
function frame(message: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(5 + message.length);
  out[0] = 0;
  out.writeUInt32BE(message.length, 1);
  out.set(message, 5);
  return out;
}

function subscriptions(sotw: boolean, id: string): Buffer {
  const node = nodeToWire({ id });
  return Buffer.concat(
    TYPES.map((type_url, t) => {
      const first = t === 0 ? { node } : {};
      const msg = sotw
        ? Req.encode(Req.fromObject({ type_url, ...first })).finish()
        : DReq.encode(DReq.fromObject({ type_url, resource_names_subscribe: ["*"], ...first })).finish();
      return frame(msg);
    }),
  );
}

/** Splits a stream's DATA into gRPC messages, keeping a partial one across chunks. */
class Deframer {
  private pending: Buffer | undefined;

  push(chunk: Buffer, onMessage: (m: Buffer) => void): void {
    let buf = this.pending ? Buffer.concat([this.pending, chunk]) : chunk;
    this.pending = undefined;
    while (buf.length >= 5) {
      if (buf[0] !== 0) throw new Error("compressed gRPC message, none was negotiated");
      const len = buf.readUInt32BE(1);
      if (buf.length < 5 + len) break;
      onMessage(buf.subarray(5, 5 + len));
      buf = buf.subarray(5 + len);
    }
    if (buf.length > 0) this.pending = buf;
  }
}

interface Failover {
  readonly killed: number;
  /** Nodes that were on the killed replica and are not back yet. */
  readonly waiting: Set<number>;
  readonly streams: number;
  /** When each of those nodes first tried another replica. */
  readonly firstAttempt: Map<number, number>;
  lastBackAt: number;
}

/** Connections to one replica: new streams go on the newest until it carries `perConnection`. */
interface Pool {
  session: ClientHttp2Session | undefined;
  streams: number;
}

function run(cfg: Start): void {
  const sotw = cfg.protocol === "sotw";
  const replicated = cfg.ports.length > 1;
  const pools: Pool[] = cfg.ports.map(() => ({ session: undefined, streams: 0 }));
  const target = new Map<number, number>();
  const backoff = new Map<number, Backoff>();
  const orders = new Map<number, ReplicaOrder>();
  let synced = 0;
  let failover: Failover | undefined;
  // With replicas, a stream ending is what failover is about, not an error of the bench.
  const fail = (id: string, reason: string) => {
    if (!replicated) send({ kind: "error", message: `${id}: ${reason}` });
  };

  const openSession = (t: number): ClientHttp2Session => {
    const s = connect(`https://127.0.0.1:${cfg.ports[t]}`, {
      ca: cfg.certPems[t],
      servername: "localhost",
      settings: { initialWindowSize: 1 << 20 },
      // Hundreds of streams share a connection; Node's default 10 MB per-session cap would make it
      // refuse streams long before the load is reached (grpc-js lifts it on its side the same way).
      maxSessionMemory: Number.MAX_SAFE_INTEGER,
    });
    s.on("connect", () => s.setLocalWindowSize(64 << 20));
    s.on("error", (err) => fail("connection", err.message));
    return s;
  };

  const sessionFor = (t: number): ClientHttp2Session => {
    const pool = pools[t] as Pool;
    if (!pool.session || pool.session.closed || pool.session.destroyed || pool.streams >= cfg.perConnection) {
      pool.session = openSession(t);
      pool.streams = 0;
    }
    pool.streams++;
    return pool.session;
  };

  const reconnect = (i: number): void => {
    const o = orders.get(i) ?? new ReplicaOrder(cfg.ports.length, target.get(i) ?? 0);
    orders.set(i, o);
    target.set(i, o.advance());
    const b = backoff.get(i) ?? new Backoff(DEFAULT_BACKOFF);
    backoff.set(i, b);
    setTimeout(() => {
      if (failover?.waiting.has(i) && !failover.firstAttempt.has(i)) failover.firstAttempt.set(i, now());
      openStream(i);
    }, b.next());
  };

  const back = (i: number): void => {
    if (!failover || target.get(i) === failover.killed || !failover.waiting.delete(i)) return;
    failover.lastBackAt = now();
    if (failover.waiting.size === 0) report(failover);
  };

  const report = (f: Failover): void => {
    const attempts = [...f.firstAttempt.values()].sort((x, y) => x - y);
    send({
      kind: "failed-over",
      streams: f.streams,
      lastBackAt: f.lastBackAt,
      firstAttemptAt: attempts[0] ?? NaN,
      lastFirstAttemptAt: attempts[attempts.length - 1] ?? NaN,
    });
  };

  const openStream = (i: number): void => {
    const id = nodeId(i);
    const stream: ClientHttp2Stream = sessionFor(target.get(i) ?? 0).request(
      {
        [constants.HTTP2_HEADER_METHOD]: "POST",
        [constants.HTTP2_HEADER_PATH]: sotw ? SOTW_PATH : DELTA_PATH,
        [constants.HTTP2_HEADER_CONTENT_TYPE]: "application/grpc",
        [constants.HTTP2_HEADER_TE]: "trailers",
      },
      { endStream: false },
    );
    const pending = new Set(TYPES);
    const deframer = new Deframer();
    stream.on("data", (chunk: Buffer) => {
      backoff.get(i)?.reset();
      try {
        deframer.push(chunk, (message) => {
          const head = readHead(message);
          stream.write(frame(ack(sotw, head)));
          if (pending.size > 0 && pending.delete(head.typeUrl) && pending.size === 0) {
            back(i);
            synced++;
            if (synced === cfg.count) send({ kind: "synced" });
          }
        });
      } catch (err) {
        fail(id, err instanceof Error ? err.message : String(err));
        stream.close(constants.NGHTTP2_PROTOCOL_ERROR);
      }
    });
    stream.on("trailers", (trailers) => {
      const status = trailers["grpc-status"];
      if (status !== "0")
        fail(id, `stream ended with grpc-status ${String(status)}: ${String(trailers["grpc-message"])}`);
    });
    stream.on("error", (err) => fail(id, err.message));
    if (replicated) stream.on("close", () => reconnect(i));
    stream.write(subscriptions(sotw, id));
  };

  for (let k = 0; k < cfg.count; k++) {
    const i = cfg.first + k;
    target.set(i, i % cfg.ports.length);
    openStream(i);
  }

  watchFailover = (killed) => {
    const waiting = new Set([...target].filter(([, t]) => t === killed).map(([i]) => i));
    failover = { killed, waiting, streams: waiting.size, firstAttempt: new Map(), lastBackAt: now() };
    send({ kind: "watching", streams: waiting.size });
    if (waiting.size === 0) report(failover);
  };
}

let watchFailover: (killed: number) => void = () => send({ kind: "error", message: "not started" });

process.on(
  "message",
  (msg: Start | { kind: "watch-failover"; replica: number } | { kind: "cpu" } | { kind: "exit" }) => {
    if (msg.kind === "start") run(msg);
    else if (msg.kind === "watch-failover") watchFailover(msg.replica);
    else if (msg.kind === "cpu") {
      const used = process.cpuUsage();
      send({ kind: "cpu", ms: (used.user + used.system) / 1000 });
    } else process.exit(0);
  },
);
send({ kind: "ready" });
