import net from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startRawUpstream } from "../support/raw-upstream.ts";
import type { RawUpstream } from "../support/raw-upstream.ts";
import type { App } from "../support/sidecar-apps.ts";
import { RawHttpConnection, rawExchange, startHttpApp } from "../support/sidecar-apps.ts";
import type { SidecarPair } from "../support/sidecar-mesh.ts";
import { startPair } from "../support/sidecar-mesh.ts";

/**
 * HTTP/1.1 message framing through a sidecar pair (client → A → mTLS → B → application), both
 * ways: request bodies whose boundaries must be exact on a keep-alive connection, and responses
 * whose framing depends on the request and the status (HEAD, 1xx, 204, 304, close-delimited),
 * from an application that writes its responses byte for byte.
 */

/** Scripted responses by request path; the connection stays open unless the script ends it. */
const SCRIPTS: Record<string, string> = {
  "/chunked":
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Sum: 11\r\n\r\n",
  "/head-chunked": "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
  "/no-content": "HTTP/1.1 204 No Content\r\n\r\n",
  "/not-modified": 'HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\nETag: "v1"\r\n\r\n',
  "/early-hints":
    "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
  "/both-framings": "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
  "/nul-header": "HTTP/1.1 200 OK\r\nX-A: \x00\r\nContent-Length: 2\r\n\r\nok",
  "/unasked-switch": "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n",
};

let scripted: RawUpstream;
let echo: App;
let pair: SidecarPair;

function startScriptedApp(): Promise<RawUpstream> {
  return startRawUpstream(({ path: target, socket }) => {
    const path = target.split("?")[0] as string;
    if (path === "/close-delimited") {
      socket.end("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil-the-end");
    } else if (path === "/truncated") {
      socket.end("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort");
    } else {
      socket.write(SCRIPTS[path] ?? "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
    }
  });
}

beforeAll(async () => {
  scripted = await startScriptedApp();
  echo = await startHttpApp();
  pair = await startPair({
    appPorts: [scripted.port, echo.port],
    protocols: { [scripted.port]: "http1", [echo.port]: "http1" },
    policyB: `
apiVersion: sigil.dev/v1
kind: AuthorizationPolicy
metadata: { name: api }
spec:
  selector: { matchLabels: { app: api } }
  ingress:
    - action: allow
      from: [ { matchLabels: { app: web } } ]
    - action: deny
      http: { paths: [ "/admin/**" ] }
`,
  });
});

afterAll(async () => {
  await pair?.close();
  await scripted?.close();
  await echo?.close();
});

/** The responses in a byte stream, each head split from what follows it up to the next status line. */
function responses(data: string): { head: string; rest: string }[] {
  return data
    .split(/(?=HTTP\/1\.1 \d{3} )/)
    .filter(Boolean)
    .map((r) => {
      const end = r.indexOf("\r\n\r\n");
      return { head: r.slice(0, end), rest: r.slice(end + 4) };
    });
}

describe("responses", () => {
  it("carries a chunked body with extensions and trailers unchanged", async () => {
    const res = await rawExchange(
      pair.outboundPort(scripted.port),
      "GET /chunked HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n",
    );
    const [first] = responses(res.data);
    expect(first?.head).toMatch(/transfer-encoding: chunked/i);
    expect(first?.rest).toBe("5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Sum: 11\r\n\r\n");
  });

  it("knows that HEAD, 204 and 304 responses have no body, whatever their fields say", async () => {
    const res = await rawExchange(
      pair.outboundPort(scripted.port),
      "HEAD /head-chunked HTTP/1.1\r\nHost: api\r\n\r\n" +
        "GET /no-content HTTP/1.1\r\nHost: api\r\n\r\n" +
        "GET /not-modified HTTP/1.1\r\nHost: api\r\n\r\n" +
        "GET /early-hints HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n",
    );
    const all = responses(res.data);
    expect(all.map((r) => r.head.split("\r\n")[0])).toEqual([
      "HTTP/1.1 200 OK",
      "HTTP/1.1 204 No Content",
      "HTTP/1.1 304 Not Modified",
      "HTTP/1.1 200 OK",
    ]);
    expect(all.slice(0, 3).map((r) => r.rest)).toEqual(["", "", ""]);
    expect(all[2]?.head).toMatch(/content-length: 10/i);
    // The interim 103 is not relayed; the final response follows.
    expect(all[3]?.rest).toBe("ok");
  });

  it("ends a close-delimited response by closing the client connection", async () => {
    const res = await rawExchange(
      pair.outboundPort(scripted.port),
      "GET /close-delimited HTTP/1.1\r\nHost: api\r\n\r\n",
    );
    const [only] = responses(res.data);
    expect(only?.head).toMatch(/connection: close/i);
    expect(only?.rest).toBe("until-the-end");
  });

  it("gives an HTTP/1.0 client the payload of a chunked response without the chunk framing", async () => {
    const res = await rawExchange(
      pair.outboundPort(scripted.port),
      "GET /chunked HTTP/1.0\r\nHost: api\r\n\r\n",
    );
    const [only] = responses(res.data);
    expect(only?.head).not.toMatch(/transfer-encoding/i);
    expect(only?.rest).toBe("hello world");
  });

  it.each([
    ["both Content-Length and Transfer-Encoding", "/both-framings"],
    ["a NUL in a header", "/nul-header"],
    ["an unasked 101", "/unasked-switch"],
  ])("answers 502 for a response with %s", async (_name, path) => {
    const conn = await RawHttpConnection.open(pair.outboundPort(scripted.port));
    try {
      const res = await conn.request(`GET ${path} HTTP/1.1\r\nHost: api\r\n\r\n`);
      expect(res.status).toBe(502);
      expect(JSON.parse(res.body).reason).toMatch(/^upstream: /);
    } finally {
      conn.close();
    }
  });

  it("cuts the client connection when the response ends before its Content-Length", async () => {
    const res = await rawExchange(
      pair.outboundPort(scripted.port),
      "GET /truncated HTTP/1.1\r\nHost: api\r\n\r\n",
    );
    const [only] = responses(res.data);
    expect(only?.head).toMatch(/content-length: 100/i);
    expect(only?.rest.length).toBeLessThan(100);
  });
});

describe("request bodies", () => {
  it("keeps exact boundaries between a Content-Length body, a chunked body and the next request", async () => {
    const before = echo.seen.length;
    const res = await rawExchange(
      pair.outboundPort(echo.port),
      "POST /one HTTP/1.1\r\nHost: api\r\nContent-Length: 5\r\n\r\nhello" +
        "POST /two HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nX-T: 1\r\n\r\n" +
        "GET /three HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n",
    );
    expect(responses(res.data).map((r) => r.head.split("\r\n")[0])).toEqual([
      "HTTP/1.1 200 OK",
      "HTTP/1.1 200 OK",
      "HTTP/1.1 200 OK",
    ]);
    expect(echo.seen.slice(before).map((r) => [r.url, r.body])).toEqual([
      ["/one", "hello"],
      ["/two", "abcde"],
      ["/three", ""],
    ]);
  });

  it.each([
    ["a negative chunk size", "-1\r\n"],
    ["hex junk in a chunk size", "1x\r\n"],
    ["an overflowing chunk size", "fffffffffffffffffff\r\n"],
    ["chunk data longer than its size", "2\r\nabc\r\n0\r\n\r\n"],
  ])("refuses a request body with %s and never reads the request smuggled after it", async (_name, body) => {
    const res = await rawExchange(
      pair.outboundPort(echo.port),
      `POST /upload HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: chunked\r\n\r\n${body}` +
        "GET /admin/smuggled HTTP/1.1\r\nHost: api\r\n\r\n",
    );
    expect(res.data).toMatch(/^HTTP\/1\.1 400 /);
    expect(res.data).not.toMatch(/HTTP\/1\.1 403/);
    expect(echo.seen.some((r) => r.url.includes("smuggled") || r.url === "/upload")).toBe(false);
  });

  it("answers Expect: 100-continue itself, then forwards the body", async () => {
    const socket = net.connect(pair.outboundPort(echo.port), "127.0.0.1");
    try {
      let data = "";
      const waitFor = (pattern: RegExp) =>
        new Promise<void>((resolve, reject) => {
          const check = (): void => {
            if (pattern.test(data)) {
              socket.off("data", onData);
              resolve();
            }
          };
          const onData = (c: Buffer): void => {
            data += c.toString();
            check();
          };
          socket.on("data", onData);
          socket.once("close", () => reject(new Error(`closed; got ${data}`)));
          check();
        });
      await new Promise<void>((resolve) => socket.once("connect", () => resolve()));
      socket.write(
        "PUT /continue HTTP/1.1\r\nHost: api\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n",
      );
      await waitFor(/^HTTP\/1\.1 100 Continue\r\n\r\n/);
      socket.write("body");
      await waitFor(/"body":"body"/);
      expect(data).toMatch(/HTTP\/1\.1 200 OK/);
    } finally {
      socket.destroy();
    }
    const seen = echo.seen.find((r) => r.url === "/continue");
    expect(seen?.headers.expect).toBeUndefined();
  });
});

describe("timeouts", () => {
  let timed: SidecarPair;

  beforeAll(async () => {
    timed = await startPair({
      appPorts: [echo.port],
      protocols: { [echo.port]: "http1" },
      configA: { headersTimeoutMs: 300, keepAliveTimeoutMs: 300 },
      policyB: `
apiVersion: sigil.dev/v1
kind: AuthorizationPolicy
metadata: { name: api }
spec:
  selector: { matchLabels: { app: api } }
  ingress: [ { action: allow, from: [ { matchLabels: { app: web } } ] } ]
`,
    });
  });

  afterAll(async () => {
    await timed?.close();
  });

  it("answers 408 and closes when a request head does not complete in time", async () => {
    const res = await rawExchange(timed.outboundPort(echo.port), "GET /slow HTTP/1.1\r\nHost: a", 5000);
    expect(res.data).toMatch(/^HTTP\/1\.1 408 /);
  });

  it("closes a keep-alive connection left idle", async () => {
    const conn = await RawHttpConnection.open(timed.outboundPort(echo.port));
    try {
      expect((await conn.request("GET /idle HTTP/1.1\r\nHost: a\r\n\r\n")).status).toBe(200);
      // Sends nothing and waits (bounded) for a response that can only end with the close.
      await expect(conn.request("", 5000)).rejects.toThrow(/connection closed/);
    } finally {
      conn.close();
    }
  });
});
