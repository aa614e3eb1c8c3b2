import { Worker } from "node:worker_threads";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { TLSSocket } from "node:tls";
import { apiIngressPolicy } from "../support/api-ingress.ts";
import { RawHttpConnection } from "../support/sidecar-apps.ts";
import type { RawResponse } from "../support/sidecar-apps.ts";
import type { SidecarPair } from "../support/sidecar-mesh.ts";
import { startPair } from "../support/sidecar-mesh.ts";

/**
 * The race between the sidecar's pool of kept-alive connections to the application and the
 * application's own keep-alive timeout: a request the sidecar sends on a pooled connection just as
 * the application closes it never gets an answer. The application is a real node:http server
 * (keepAliveTimeout 1 s) in a worker thread. To make the race happen every time, the test writes
 * the request to sidecar B and then blocks B's thread until the application has closed every
 * connection it accepted: when B runs again, the request and the application's FIN are both
 * waiting, the request first, so B sends it on the connection the application already closed.
 * Counters in shared memory are the synchronization; no sleep decides anything. On the mesh hop
 * there is a sidecar on both ends: the callee advertises its idle time, and the caller's pool
 * (which honours the hint, as the first suite shows towards the application) closes first.
 */

const APP = `
const http = require("node:http");
const { parentPort, workerData } = require("node:worker_threads");
// [0] connections closed, [1] connections accepted, [2] requests handled.
const counters = new Int32Array(workerData.counters);
const server = http.createServer((req, res) => {
  let size = 0;
  req.on("data", (c) => (size += c.length));
  req.on("end", () => {
    Atomics.add(counters, 2, 1);
    const body = req.method + " " + req.url + " " + size;
    // node:http advertises its timeout ("Keep-Alive: timeout=1"); many servers do not, and those
    // are the ones the race is left to: this field replaces node's and names no timeout.
    if (!req.url.startsWith("/hinted")) res.setHeader("keep-alive", "max=100");
    res.writeHead(200, { "content-length": Buffer.byteLength(body) });
    res.end(body);
  });
});
server.keepAliveTimeout = 1000;
server.on("connection", (socket) => {
  Atomics.add(counters, 1, 1);
  socket.on("close", () => {
    Atomics.add(counters, 0, 1);
    Atomics.notify(counters, 0);
  });
});
server.listen(0, "127.0.0.1", () => parentPort.postMessage(server.address().port));
parentPort.on("message", () => server.close(() => process.exit(0)));
`;

const counters = new Int32Array(new SharedArrayBuffer(3 * 4));
let app: Worker;
let pair: SidecarPair;
let mesh: TLSSocket;
let client: RawHttpConnection;

/** Blocks this thread (and so sidecar B) until the application has closed every connection it accepted. */
function blockUntilAppClosedAll(limitMs: number): void {
  const deadline = Date.now() + limitMs;
  for (;;) {
    const closed = Atomics.load(counters, 0);
    if (closed >= Atomics.load(counters, 1)) return;
    const left = deadline - Date.now();
    if (left <= 0)
      throw new Error(`the application kept ${Atomics.load(counters, 1) - closed} connection(s) open`);
    Atomics.wait(counters, 0, closed, left);
  }
}

/**
 * Warms the pool with one exchange, then sends `request` and holds B until the application has
 * closed the warmed connection for its keep-alive timeout; resolves with the response B gives.
 */
async function racedRequest(request: string): Promise<RawResponse> {
  expect((await client.request("GET /warm HTTP/1.1\r\nHost: api\r\n\r\n")).status).toBe(200);
  const answer = client.request(request);
  blockUntilAppClosedAll(10_000);
  return answer;
}

beforeAll(async () => {
  app = new Worker(APP, { eval: true, workerData: { counters: counters.buffer } });
  const port = await new Promise<number>((resolve, reject) => {
    app.once("message", resolve);
    app.once("error", reject);
  });
  pair = await startPair({
    appPorts: [port],
    policyB: apiIngressPolicy({ methods: ["GET", "POST"], paths: ["/**"] }),
  });
  mesh = await pair.meshConnect(await pair.pki.credentials("web", { app: "web" }), "http1", port);
  client = RawHttpConnection.over(mesh);
});

afterAll(async () => {
  mesh?.destroy();
  await pair?.close();
  app?.postMessage("stop");
  await new Promise((resolve) => app?.once("exit", resolve));
});

describe("HTTP/1.1 towards the application: its advertised keep-alive timeout", () => {
  it("a connection whose server keeps it idle for 1 s (less the margin: nothing) is not reused", async () => {
    const acceptedBefore = Atomics.load(counters, 1);
    for (const path of ["/hinted-1", "/hinted-2"]) {
      const response = await client.request(`GET ${path} HTTP/1.1\r\nHost: api\r\n\r\n`);
      expect(response.body).toBe(`GET ${path} 0`);
    }
    expect(Atomics.load(counters, 1) - acceptedBefore).toBe(2);
  });
});

describe("HTTP/1.1 on the mesh hop: the idle time each side keeps", () => {
  it("a sidecar advertises how long it keeps a connection idle, so the caller's pool gives it up first", async () => {
    const allowed = await client.request("GET /advertised HTTP/1.1\r\nHost: api\r\n\r\n");
    // B's own keep-alive timeout (60 s by default), never the application's field of its own hop.
    expect(allowed.headers["keep-alive"]).toBe("timeout=60");
    const refused = await client.request("DELETE /advertised HTTP/1.1\r\nHost: api\r\n\r\n");
    expect(refused.status).toBe(403);
    expect(refused.headers["keep-alive"]).toBe("timeout=60");
  });
});

describe("HTTP/1.1 towards the application: a pooled connection the application is closing", () => {
  it("a GET sent on it is sent again on a fresh connection and answered, and reaches the application once", async () => {
    const handledBefore = Atomics.load(counters, 2);
    const response = await racedRequest("GET /raced HTTP/1.1\r\nHost: api\r\n\r\n");
    expect(response.status).toBe(200);
    expect(response.body).toBe("GET /raced 0");
    // The warm-up and the raced request: the copy sent on the closed connection was never handled.
    expect(Atomics.load(counters, 2) - handledBefore).toBe(2);
  });

  it("a POST is not sent twice: it is answered 502 rather than repeated without the client asking", async () => {
    const handledBefore = Atomics.load(counters, 2);
    const response = await racedRequest("POST /raced HTTP/1.1\r\nHost: api\r\nContent-Length: 2\r\n\r\nhi");
    expect(response.status).toBe(502);
    expect(Atomics.load(counters, 2) - handledBefore).toBe(1);
  });
});
