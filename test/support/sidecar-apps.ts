/**
 * The applications behind the sidecars in the sidecar suites: real HTTP/1.1, HTTP/2, gRPC,
 * WebSocket and TCP servers on loopback, each recording what actually reached it.
 */
import { createHash } from "node:crypto";
import http from "node:http";
import http2 from "node:http2";
import type { AddressInfo, Server, Socket } from "node:net";
import net from "node:net";
import * as grpc from "@grpc/grpc-js";

export interface SeenRequest {
  readonly method: string;
  readonly url: string;
  readonly headers: http.IncomingHttpHeaders;
  readonly body: string;
}

export interface App {
  readonly port: number;
  readonly seen: SeenRequest[];
  close(): Promise<void>;
}

/** Listens on an ephemeral loopback port; resolves with the port. */
export function listen(server: Server): Promise<number> {
  return new Promise((resolve) =>
    server.listen(0, "127.0.0.1", () => resolve((server.address() as AddressInfo).port)),
  );
}

export interface HttpApp extends App {
  connections(): number;
  /** Resolves when a request for `/hold` has arrived; its response waits for `release()`. */
  held(): Promise<void>;
  release(): void;
}

/**
 * HTTP/1.1 app: answers JSON describing the request; `/stream/<n>` sends n chunks; `/hold` answers
 * only once the test calls `release()`.
 */
export async function startHttpApp(): Promise<HttpApp> {
  const seen: SeenRequest[] = [];
  let connections = 0;
  let arrived: () => void = () => undefined;
  let arrival = new Promise<void>((resolve) => (arrived = resolve));
  const waiting: (() => void)[] = [];
  const server = http.createServer((req, res) => {
    if (req.url === "/hold") {
      waiting.push(() => res.end("released"));
      arrived();
      return;
    }
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks).toString();
      seen.push({ method: req.method ?? "", url: req.url ?? "", headers: req.headers, body });
      const m = /^\/stream\/(\d+)$/.exec(req.url ?? "");
      if (m) {
        res.writeHead(200, { "content-type": "text/plain" });
        for (let i = 0; i < Number(m[1]); i++) res.write(`chunk-${i};`);
        res.end();
        return;
      }
      const json = JSON.stringify({ method: req.method, url: req.url, body });
      res.writeHead(200, {
        "content-type": "application/json",
        "content-length": Buffer.byteLength(json),
        "x-app": "http1",
      });
      res.end(json);
    });
  });
  server.on("connection", () => connections++);
  server.on("upgrade", (req: http.IncomingMessage, socket: Socket) => acceptWebSocket(req, socket, seen));
  const port = await listen(server);
  return {
    port,
    seen,
    connections: () => connections,
    held: () => arrival,
    release: () => {
      arrival = new Promise<void>((resolve) => (arrived = resolve));
      for (const w of waiting.splice(0)) w();
    },
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** Minimal RFC 6455 server side: the handshake, then echoes each (small, unfragmented) text frame. */
function acceptWebSocket(req: http.IncomingMessage, socket: Socket, seen: SeenRequest[]): void {
  seen.push({ method: req.method ?? "", url: req.url ?? "", headers: req.headers, body: "" });
  const key = req.headers["sec-websocket-key"];
  if (typeof key !== "string") {
    socket.end("HTTP/1.1 400 Bad Request\r\n\r\n");
    return;
  }
  const accept = createHash("sha1").update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest("base64");
  socket.write(
    `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`,
  );
  let buf = Buffer.alloc(0);
  socket.on("data", (chunk: Buffer) => {
    buf = Buffer.concat([buf, chunk]);
    while (buf.length >= 6) {
      const opcode = (buf[0] as number) & 0x0f;
      const len = (buf[1] as number) & 0x7f;
      if (len > 125 || buf.length < 6 + len) return;
      const mask = buf.subarray(2, 6);
      const payload = Buffer.from(buf.subarray(6, 6 + len).map((b, i) => b ^ (mask[i % 4] as number)));
      buf = buf.subarray(6 + len);
      if (opcode === 0x8) {
        socket.end(Buffer.from([0x88, 0x00]));
        return;
      }
      const text = Buffer.from(`echo:${payload.toString()}`);
      socket.write(Buffer.concat([Buffer.from([0x81, text.length]), text]));
    }
  });
  socket.on("error", () => undefined);
}

/** HTTP/2 (cleartext) app: JSON describing the request plus a trailer. */
export async function startH2App(): Promise<App> {
  const seen: SeenRequest[] = [];
  const server = http2.createServer();
  server.on("stream", (stream, headers) => {
    if (headers[":path"] === "/api/h2-early") {
      // Answers before the request ends and stops the upload (RFC 9113 §8.1).
      stream.respond({ ":status": 200 });
      stream.end("early", () => stream.close(http2.constants.NGHTTP2_NO_ERROR));
      return;
    }
    const chunks: Buffer[] = [];
    stream.on("data", (c: Buffer) => chunks.push(c));
    stream.on("end", () => {
      const body = Buffer.concat(chunks).toString();
      seen.push({ method: String(headers[":method"]), url: String(headers[":path"]), headers, body });
      stream.respond({ ":status": 200, "content-type": "application/json" }, { waitForTrailers: true });
      stream.once("wantTrailers", () => stream.sendTrailers({ "x-h2-trailer": "done" }));
      stream.end(JSON.stringify({ path: headers[":path"], body }));
    });
  });
  const port = await listen(server);
  return {
    port,
    seen,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

const passthrough = {
  serialize: (b: Buffer): Buffer => b,
  deserialize: (b: Buffer): Buffer => b,
};

/** A gRPC service with raw-bytes messages (no .proto needed). */
export const echoService = {
  unary: {
    path: "/sigil.test.Echo/Unary",
    requestStream: false,
    responseStream: false,
    requestSerialize: passthrough.serialize,
    requestDeserialize: passthrough.deserialize,
    responseSerialize: passthrough.serialize,
    responseDeserialize: passthrough.deserialize,
  },
  serverStream: {
    path: "/sigil.test.Echo/ServerStream",
    requestStream: false,
    responseStream: true,
    requestSerialize: passthrough.serialize,
    requestDeserialize: passthrough.deserialize,
    responseSerialize: passthrough.serialize,
    responseDeserialize: passthrough.deserialize,
  },
  bidi: {
    path: "/sigil.test.Echo/Bidi",
    requestStream: true,
    responseStream: true,
    requestSerialize: passthrough.serialize,
    requestDeserialize: passthrough.deserialize,
    responseSerialize: passthrough.serialize,
    responseDeserialize: passthrough.deserialize,
  },
  fail: {
    path: "/sigil.test.Echo/Fail",
    requestStream: false,
    responseStream: false,
    requestSerialize: passthrough.serialize,
    requestDeserialize: passthrough.deserialize,
    responseSerialize: passthrough.serialize,
    responseDeserialize: passthrough.deserialize,
  },
} satisfies grpc.ServiceDefinition;

export const EchoClient = grpc.makeGenericClientConstructor(echoService, "Echo");

export async function startGrpcApp(): Promise<{ port: number; close(): Promise<void> }> {
  const server = new grpc.Server();
  const trailer = (value: string): grpc.Metadata => {
    const md = new grpc.Metadata();
    md.set("x-trailer", value);
    return md;
  };
  server.addService(echoService, {
    unary: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
      cb(null, Buffer.concat([Buffer.from("unary:"), call.request]), trailer("unary"));
    },
    serverStream: (call: grpc.ServerWritableStream<Buffer, Buffer>) => {
      const n = Number(call.request.toString());
      for (let i = 0; i < n; i++) call.write(Buffer.from(`item-${i}`));
      call.end(trailer(`streamed-${n}`));
    },
    bidi: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
      call.on("data", (m: Buffer) => call.write(Buffer.concat([Buffer.from("bidi:"), m])));
      call.on("end", () => call.end(trailer("bidi")));
    },
    fail: (_call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
      cb({ code: grpc.status.NOT_FOUND, details: "no such thing", metadata: trailer("failed") });
    },
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, p) =>
      err ? reject(err) : resolve(p),
    ),
  );
  return {
    port,
    close: () => new Promise((resolve) => server.tryShutdown(() => resolve())),
  };
}

/**
 * TCP app. "echo": replies "got <n> bytes: <text>" after the client half-closes, then closes.
 * "banner": speaks first ("220 ready\r\n") and then echoes.
 */
export async function startTcpApp(kind: "echo" | "banner"): Promise<App> {
  const seen: SeenRequest[] = [];
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    socket.on("error", () => undefined);
    if (kind === "banner") {
      socket.write("220 ready\r\n");
      socket.pipe(socket);
      return;
    }
    const chunks: Buffer[] = [];
    socket.on("data", (c: Buffer) => chunks.push(c));
    socket.on("end", () => {
      const text = Buffer.concat(chunks).toString();
      seen.push({ method: "", url: "", headers: {}, body: text });
      socket.end(`got ${Buffer.byteLength(text)} bytes: ${text}`);
    });
  });
  const port = await listen(server);
  return { port, seen, close: () => new Promise((resolve) => server.close(() => resolve())) };
}

/** Sends raw bytes on a fresh connection and collects everything until the server closes it. */
export function rawExchange(
  port: number,
  payload: string | Buffer,
  timeoutMs = 5000,
): Promise<{ data: string; reset: boolean }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, "127.0.0.1", () => socket.write(payload));
    const chunks: Buffer[] = [];
    let reset = false;
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no close within ${timeoutMs} ms; got ${Buffer.concat(chunks).toString()}`));
    }, timeoutMs);
    socket.on("data", (c: Buffer) => chunks.push(c));
    socket.on("error", (err: NodeJS.ErrnoException) => {
      if (err.code === "ECONNRESET") reset = true;
      else reject(err);
    });
    socket.on("close", () => {
      clearTimeout(timer);
      resolve({ data: Buffer.concat(chunks).toString(), reset });
    });
  });
}

export interface RawResponse {
  readonly status: number;
  readonly headers: Record<string, string>;
  readonly body: string;
}

/**
 * One client connection that sends HTTP/1.1 requests as raw text and reads responses framed by
 * Content-Length (what the sidecar's own answers and the test apps use), to observe exactly what a
 * keep-alive connection does.
 */
export class RawHttpConnection {
  private buf = Buffer.alloc(0);
  private waiter: (() => void) | null = null;
  closed = false;

  private constructor(private readonly socket: Socket) {
    socket.on("data", (c: Buffer) => {
      this.buf = Buffer.concat([this.buf, c]);
      this.waiter?.();
    });
    socket.on("close", () => {
      this.closed = true;
      this.waiter?.();
    });
    socket.on("error", () => undefined);
  }

  /** Requests over a connection already open (a mesh mTLS socket, say). */
  static over(socket: Socket): RawHttpConnection {
    return new RawHttpConnection(socket);
  }

  static open(port: number): Promise<RawHttpConnection> {
    return new Promise((resolve, reject) => {
      const socket = net.connect(port, "127.0.0.1", () => resolve(new RawHttpConnection(socket)));
      socket.once("error", reject);
    });
  }

  async request(text: string, timeoutMs = 5000): Promise<RawResponse> {
    this.socket.write(text);
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const headEnd = this.buf.indexOf("\r\n\r\n");
      if (headEnd !== -1) {
        const head = this.buf.subarray(0, headEnd).toString("latin1").split("\r\n");
        const status = Number((head[0] ?? "").split(" ")[1]);
        const headers: Record<string, string> = {};
        for (const line of head.slice(1)) {
          const i = line.indexOf(":");
          headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
        }
        const length = Number(headers["content-length"] ?? "0");
        if (this.buf.length >= headEnd + 4 + length) {
          const body = this.buf.subarray(headEnd + 4, headEnd + 4 + length).toString();
          this.buf = this.buf.subarray(headEnd + 4 + length);
          return { status, headers, body };
        }
      }
      if (this.closed) throw new Error(`connection closed; buffered: ${this.buf.toString()}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error("no complete response in time");
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiter = () => {
          clearTimeout(timer);
          this.waiter = null;
          resolve();
        };
      });
    }
  }

  close(): void {
    this.socket.destroy();
  }
}
