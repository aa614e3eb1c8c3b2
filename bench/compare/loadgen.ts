/**
 * The load generator used for every path in the comparison, in its own process so its CPU is
 * never counted as a proxy's.
 *
 *   rate mode: open loop at a fixed request rate; latency runs from each request's scheduled send
 *     time, so a stalled proxy is charged for the requests queued behind it (no coordinated omission).
 *   max mode: closed loop, a fixed number of requests in flight, as many as the path carries.
 *
 *   tsx bench/compare/loadgen.ts --protocol h1|grpc --port N --mode rate|max --out result.json
 */
import { writeFileSync } from "node:fs";
import http2 from "node:http2";
import net from "node:net";
import { Command } from "commander";
import { LatencyRecorder, summarize } from "./latency.ts";
import { BODY_BYTES, GRPC_METHOD, HTTP_PATH } from "./workload.ts";

const opts = new Command()
  .requiredOption("--protocol <p>", "h1 or grpc")
  .option("--host <h>", "target host", "127.0.0.1")
  .requiredOption("--port <n>", "target port")
  .requiredOption("--mode <m>", "rate or max")
  .option("--rate <rps>", "requests per second (rate mode)", "1000")
  .option("--duration <s>", "measured seconds", "10")
  .option("--warmup <s>", "seconds of load before measuring", "2")
  .option("--connections <n>", "HTTP/1.1 connections (max mode: each with one request in flight)", "32")
  .option("--sessions <n>", "HTTP/2 connections for gRPC", "4")
  .option("--streams <n>", "gRPC calls in flight per connection (max mode)", "16")
  .option("--authority <a>", "Host / :authority sent", "backend.bench")
  .requiredOption("--out <file>", "where the JSON result goes")
  .parse()
  .opts<{
    protocol: string;
    host: string;
    port: string;
    mode: string;
    rate: string;
    duration: string;
    warmup: string;
    connections: string;
    sessions: string;
    streams: string;
    authority: string;
    out: string;
  }>();

if (opts.protocol !== "h1" && opts.protocol !== "grpc")
  throw new Error(`--protocol: h1 or grpc, not ${opts.protocol}`);
if (opts.mode !== "rate" && opts.mode !== "max") throw new Error(`--mode: rate or max, not ${opts.mode}`);
const protocol = opts.protocol;
const mode = opts.mode;
const port = Number(opts.port);
const rate = Number(opts.rate);
const durationMs = Number(opts.duration) * 1000;
const warmupMs = Number(opts.warmup) * 1000;

const payload = Buffer.alloc(BODY_BYTES, "a");
type Done = (err: string | null) => void;

/** One keep-alive HTTP/1.1 connection carrying one request at a time. */
class Http1Connection {
  private readonly socket: net.Socket;
  private buf: Buffer = Buffer.alloc(0);
  private done: Done | null = null;
  private readonly request: Buffer;
  closed = false;

  constructor(onClose: (c: Http1Connection) => void) {
    this.request = Buffer.concat([
      Buffer.from(
        `POST ${HTTP_PATH} HTTP/1.1\r\nHost: ${opts.authority}\r\nContent-Type: application/octet-stream\r\nContent-Length: ${BODY_BYTES}\r\n\r\n`,
      ),
      payload,
    ]);
    this.socket = net.connect({ host: opts.host, port, noDelay: true });
    this.socket.on("data", (chunk: Buffer) => this.onData(chunk));
    const fail = (why: string): void => {
      if (this.closed) return;
      this.closed = true;
      const d = this.done;
      this.done = null;
      d?.(why);
      onClose(this);
    };
    this.socket.on("error", (err) => fail(`connection error: ${err.message}`));
    this.socket.on("close", () => fail("connection closed by peer"));
  }

  destroy(): void {
    this.closed = true;
    this.socket.destroy();
  }

  send(done: Done): void {
    this.done = done;
    this.socket.write(this.request);
  }

  private onData(chunk: Buffer): void {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    const headEnd = this.buf.indexOf("\r\n\r\n");
    if (headEnd < 0) return;
    const head = this.buf.subarray(0, headEnd).toString("latin1");
    const status = Number(head.slice(9, 12));
    const lengthMatch = /\r\ncontent-length:\s*(\d+)/i.exec(head);
    let bodyEnd: number;
    if (lengthMatch) {
      bodyEnd = headEnd + 4 + Number(lengthMatch[1]);
      if (this.buf.length < bodyEnd) return;
    } else if (/\r\ntransfer-encoding:\s*chunked/i.test(head)) {
      const end = this.buf.indexOf("\r\n0\r\n\r\n", headEnd + 4 - 2);
      if (end < 0) return;
      bodyEnd = end + 7;
    } else {
      this.finish(`response without a length: ${head.split("\r\n")[0] ?? ""}`);
      this.socket.destroy();
      return;
    }
    this.buf = this.buf.subarray(bodyEnd);
    const closing = /\r\nconnection:\s*close/i.test(head);
    this.finish(status === 200 ? null : `HTTP ${status}`);
    if (closing) this.socket.destroy();
  }

  private finish(err: string | null): void {
    const d = this.done;
    this.done = null;
    d?.(err);
  }
}

/** One HTTP/2 connection carrying gRPC unary calls. */
class GrpcSession {
  private readonly session: http2.ClientHttp2Session;
  private readonly frame: Buffer;
  inFlight = 0;

  constructor() {
    this.session = http2.connect(`http://${opts.host}:${port}`, {
      createConnection: () => net.connect({ host: opts.host, port, noDelay: true }),
    });
    this.session.on("error", () => undefined);
    this.frame = Buffer.alloc(5 + BODY_BYTES);
    this.frame.writeUInt8(0, 0);
    this.frame.writeUInt32BE(BODY_BYTES, 1);
    payload.copy(this.frame, 5);
  }

  call(done: Done): void {
    this.inFlight++;
    let received = 0;
    let grpcStatus: string | undefined;
    let httpStatus = 0;
    let settled = false;
    const finish = (err: string | null): void => {
      if (settled) return;
      settled = true;
      this.inFlight--;
      done(err);
    };
    let stream: http2.ClientHttp2Stream;
    try {
      stream = this.session.request({
        ":method": "POST",
        ":path": GRPC_METHOD,
        ":authority": opts.authority,
        ":scheme": "http",
        "content-type": "application/grpc",
        te: "trailers",
      });
    } catch (err) {
      // Reported on the next turn: the call keeps its slot until then, so a dead session cannot
      // make the closed loop spin without yielding.
      const message = (err as Error).message;
      setImmediate(() => finish(`request: ${message}`));
      return;
    }
    stream.on("response", (headers) => {
      httpStatus = Number(headers[":status"]);
      if (headers["grpc-status"] !== undefined) grpcStatus = String(headers["grpc-status"]);
    });
    stream.on("data", (chunk: Buffer) => {
      received += chunk.length;
    });
    stream.on("trailers", (trailers) => {
      if (trailers["grpc-status"] !== undefined) grpcStatus = String(trailers["grpc-status"]);
    });
    stream.on("error", (err) => finish(`stream: ${err.message}`));
    stream.on("close", () => {
      if (httpStatus !== 200) finish(`HTTP ${httpStatus}`);
      else if (grpcStatus !== "0") finish(`grpc-status ${grpcStatus ?? "missing"}`);
      else if (received !== 5 + BODY_BYTES) finish(`response of ${received} bytes`);
      else finish(null);
    });
    stream.end(this.frame);
  }

  close(): void {
    this.session.close();
  }
}

/** Issues one request on some connection and calls back with its outcome. */
interface Transport {
  /** False when every connection is busy and no more may be opened. */
  tryIssue(done: Done): boolean;
  close(): void;
}

function http1Transport(maxConnections: number, onFree: () => void): Transport {
  const idle: Http1Connection[] = [];
  const all = new Set<Http1Connection>();
  const drop = (c: Http1Connection): void => {
    all.delete(c);
    const i = idle.indexOf(c);
    if (i >= 0) idle.splice(i, 1);
  };
  return {
    tryIssue(done) {
      let conn = idle.pop();
      if (!conn) {
        if (all.size >= maxConnections) return false;
        conn = new Http1Connection(drop);
        all.add(conn);
      }
      const c = conn;
      c.send((err) => {
        if (!c.closed) idle.push(c);
        done(err);
        onFree();
      });
      return true;
    },
    close() {
      for (const c of all) c.destroy();
    },
  };
}

function grpcTransport(sessions: number, maxPerSession: number, onFree: () => void): Transport {
  const pool = Array.from({ length: sessions }, () => new GrpcSession());
  let next = 0;
  return {
    tryIssue(done) {
      for (let i = 0; i < pool.length; i++) {
        const s = pool[(next + i) % pool.length] as GrpcSession;
        if (s.inFlight < maxPerSession) {
          next = (next + i + 1) % pool.length;
          s.call((err) => {
            done(err);
            // A call that fails synchronously must not re-enter the pump on the same stack.
            setImmediate(onFree);
          });
          return true;
        }
      }
      return false;
    },
    close() {
      for (const s of pool) s.close();
    },
  };
}

async function run(): Promise<void> {
  const rec = new LatencyRecorder();
  let errors = 0;
  const errorSamples = new Set<string>();
  const start = performance.now();
  const measureFrom = start + warmupMs;
  const measureTo = measureFrom + durationMs;
  let outstanding = 0;
  let stopping = false;
  const backlog: number[] = [];
  let pump = (): void => undefined;

  const transport =
    protocol === "h1"
      ? http1Transport(mode === "max" ? Number(opts.connections) : 256, () => pump())
      : grpcTransport(Number(opts.sessions), mode === "max" ? Number(opts.streams) : 100, () => pump());

  const issue = (scheduled: number): boolean => {
    const ok = transport.tryIssue((err) => {
      outstanding--;
      const now = performance.now();
      const measured =
        scheduled >= measureFrom && (mode === "rate" ? scheduled < measureTo : now <= measureTo);
      if (!measured) return;
      if (err) {
        errors++;
        if (errorSamples.size < 5) errorSamples.add(err);
      } else rec.record((now - scheduled) * 1000);
    });
    if (ok) outstanding++;
    return ok;
  };

  // The harness samples the proxies' CPU time at these two moments.
  const signalWindow = (phase: "start" | "end"): void => {
    process.send?.({ kind: "window", phase });
  };
  const windowStart = setTimeout(() => signalWindow("start"), warmupMs);
  if (mode === "max") {
    pump = () => {
      while (!stopping && issue(performance.now()));
    };
    pump();
    await new Promise((r) => setTimeout(r, warmupMs + durationMs));
    stopping = true;
  } else {
    // Open loop: the i-th request is due at start + i / rate, whatever happened to earlier ones.
    let issued = 0;
    pump = () => {
      while (backlog.length > 0 && issue(backlog[0] as number)) backlog.shift();
    };
    await new Promise<void>((resolve) => {
      const tick = (): void => {
        const now = performance.now();
        // Request i is due at start + i / rate: by `now`, requests 0..floor(elapsed * rate) are.
        const total = Math.ceil(((measureTo - start) / 1000) * rate);
        const due = Math.min(Math.floor(((now - start) / 1000) * rate) + 1, total);
        for (; issued < due; issued++) backlog.push(start + (issued / rate) * 1000);
        pump();
        if (now >= measureTo) resolve();
        else setTimeout(tick, 1);
      };
      tick();
    });
    stopping = true;
  }
  signalWindow("end");
  // Let the requests in flight finish (bounded), then count whatever is left as failed.
  const drainUntil = performance.now() + 5000;
  while ((outstanding > 0 || backlog.length > 0) && performance.now() < drainUntil) {
    await new Promise((r) => setTimeout(r, 5));
    if (mode === "rate") pump();
  }
  if (mode === "rate" && outstanding + backlog.length > 0) {
    errors += outstanding + backlog.length;
    errorSamples.add(`${outstanding + backlog.length} requests unanswered 5 s after the end`);
  }
  clearTimeout(windowStart);
  transport.close();
  const result = summarize(rec, {
    protocol,
    mode,
    errors,
    errorSamples: [...errorSamples],
    elapsedSeconds: durationMs / 1000,
  });
  writeFileSync(opts.out, JSON.stringify(result));
}

await run();
process.exit(0);
