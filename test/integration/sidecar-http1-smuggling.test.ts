import http from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { FlowRecord } from "../../core/flow.ts";
import { rawExchange } from "../support/sidecar-apps.ts";
import type { SidecarPair } from "../support/sidecar-mesh.ts";
import { startPair } from "../support/sidecar-mesh.ts";

/**
 * Request smuggling end to end (raw client → A → mTLS → B → application): for every probe, the
 * application (node:http, whose llhttp is the reading that counts) must see exactly the requests
 * B's policy decided and allowed, each with the method, path and Host that were decided, and never a
 * request nobody decided. The application also keeps the exact bytes it received per connection.
 */

interface AppRequest {
  readonly method: string;
  readonly url: string;
  readonly host: string | undefined;
}

interface RecordingApp {
  readonly port: number;
  readonly requests: AppRequest[];
  /** Bytes received, per upstream connection, in arrival order. */
  readonly bytes: Buffer[][];
  close(): Promise<void>;
}

async function startRecordingApp(): Promise<RecordingApp> {
  const requests: AppRequest[] = [];
  const bytes: Buffer[][] = [];
  const sockets = new Set<Socket>();
  const server = http.createServer((req, res) => {
    requests.push({ method: req.method as string, url: req.url as string, host: req.headers.host });
    req.resume();
    req.on("end", () => res.end("ok"));
  });
  server.on("connection", (socket: Socket) => {
    const received: Buffer[] = [];
    bytes.push(received);
    sockets.add(socket);
    socket.prependListener("data", (c: Buffer) => received.push(c));
    socket.on("close", () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as AddressInfo).port,
    requests,
    bytes,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

let app: RecordingApp;
let pair: SidecarPair;

beforeAll(async () => {
  app = await startRecordingApp();
  pair = await startPair({
    appPorts: [app.port],
    protocols: { [app.port]: "http1" },
    policyB: `
apiVersion: sigil.dev/v1
kind: AuthorizationPolicy
metadata: { name: api }
spec:
  selector: { matchLabels: { app: api } }
  ingress:
    - action: allow
      from: [ { matchLabels: { app: web } } ]
      http: { hosts: [ "api.test" ] }
    - action: deny
      http: { paths: [ "/admin/**" ] }
`,
  });
});

afterAll(async () => {
  await pair?.close();
  await app?.close();
});

const H = "Host: api.test\r\n";
const ADMIN = `GET /admin/secret HTTP/1.1\r\n${H}\r\n`;
const LAST = `GET /last HTTP/1.1\r\n${H}Connection: close\r\n\r\n`;

/**
 * Probes, each with the paths the application must see: the requests B allows. A probe the
 * sidecars refuse leaves nothing for the application; one whose framing slipped would let the
 * hidden /admin request through.
 */
const PROBES: Record<string, [probe: string, paths: string[]]> = {
  "Content-Length body holding a request": [
    `POST /a HTTP/1.1\r\n${H}Content-Length: ${ADMIN.length}\r\n\r\n${ADMIN}${LAST}`,
    ["/a", "/last"],
  ],
  "chunked body holding a request": [
    `POST /a HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n${ADMIN.length.toString(16)}\r\n${ADMIN}\r\n0\r\n\r\n${LAST}`,
    ["/a", "/last"],
  ],
  "chunked body with extensions and trailers": [
    `POST /a HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n3;q="a;b"\r\nabc\r\n0\r\nX-T: 1\r\n\r\n${LAST}`,
    ["/a", "/last"],
  ],
  "CL.TE": [
    `POST /a HTTP/1.1\r\n${H}Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n${ADMIN}`,
    [],
  ],
  "TE.CL": [
    `POST /a HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n${ADMIN.length.toString(16)}\r\n${ADMIN}\r\n0\r\n\r\n`,
    [],
  ],
  "TE with space before the colon": [
    `POST /a HTTP/1.1\r\n${H}Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n${ADMIN}`,
    [],
  ],
  "TE chunked, identity": [
    `POST /a HTTP/1.1\r\n${H}Transfer-Encoding: chunked, identity\r\nContent-Length: 5\r\n\r\n0\r\n\r\n${ADMIN}`,
    [],
  ],
  "two Transfer-Encoding lines": [
    `POST /a HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n\r\n0\r\n\r\n${ADMIN}`,
    [],
  ],
  "Content-Length +N": [`POST /a HTTP/1.1\r\n${H}Content-Length: +${ADMIN.length}\r\n\r\n${ADMIN}`, []],
  "two Content-Length lines": [
    `POST /a HTTP/1.1\r\n${H}Content-Length: 0\r\nContent-Length: ${ADMIN.length}\r\n\r\n${ADMIN}`,
    [],
  ],
  "obs-fold hiding Transfer-Encoding": [
    `POST /a HTTP/1.1\r\n${H}X-A: b\r\n Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n${ADMIN}`,
    [],
  ],
  "LF-only line ending": [
    `GET /a HTTP/1.1\r\n${H}X-A: b\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n${ADMIN}`,
    [],
  ],
  "chunk size overflow": [
    `POST /a HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n10000000000000001\r\nx\r\n0\r\n\r\n${ADMIN}`,
    [],
  ],
  "chunk data longer than its size": [
    `POST /a HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n1\r\nxx\r\n0\r\n\r\n${ADMIN}`,
    [],
  ],
  "two Host fields": [`GET /a HTTP/1.1\r\n${H}Host: other.test\r\n\r\n${LAST}`, []],
  "absolute-form naming another host": [
    `GET http://other.test/a HTTP/1.1\r\n${H}\r\n${LAST}`,
    ["/a", "/last"],
  ],
  "authority-form target": [`GET api.test:80 HTTP/1.1\r\n${H}\r\n${LAST}`, []],
  "encoded dot segments to the denied path": [
    `GET /a/%2e%2e/admin/secret HTTP/1.1\r\n${H}\r\n${LAST}`,
    ["/last"],
  ],
  "Expect: 100-continue": [
    `POST /a HTTP/1.1\r\n${H}Expect: 100-continue\r\nContent-Length: 2\r\n\r\nhi${LAST}`,
    ["/a", "/last"],
  ],
  "HTTP/1.0 keep-alive then a request": [
    `GET /a HTTP/1.0\r\n${H}Connection: keep-alive\r\n\r\n${LAST}`,
    ["/a"],
  ],
  "pipelined requests after a body": [
    `POST /a HTTP/1.1\r\n${H}Content-Length: 3\r\n\r\nabcGET /b HTTP/1.1\r\n${H}\r\n${LAST}`,
    ["/a", "/b", "/last"],
  ],
};

/** The requests B decided and let through for one probe, in order. */
function allowed(records: readonly FlowRecord[]): { method: string; path: string }[] {
  return records
    .filter((r) => r.protocol === "http" && r.verdict === "allow" && r.http !== undefined)
    .map((r) => ({ method: (r.http as { method: string }).method, path: (r.http as { path: string }).path }));
}

describe("every request the application sees was decided, as it was decided", () => {
  it.each(Object.entries(PROBES))("%s", async (_name, [probe, paths]) => {
    const seenBefore = app.requests.length;
    const flowsBefore = pair.b.flows.records.length;
    await rawExchange(pair.outboundPort(app.port), probe);
    const decided = allowed(pair.b.flows.records.slice(flowsBefore));
    const seen = app.requests.slice(seenBefore);
    // Allowed flow records are written when their exchange ends, so by the time the client
    // connection closed all of them are in.
    expect(seen.map((r) => ({ method: r.method, path: r.url.split("?")[0] }))).toEqual(decided);
    expect(seen.map((r) => r.url)).toEqual(paths);
    for (const r of seen) {
      expect(r.host).toBe("api.test");
      expect(r.url.startsWith("/admin")).toBe(false);
    }
  });
});
