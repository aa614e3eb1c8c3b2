import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { App } from "../support/sidecar-apps.ts";
import { RawHttpConnection, rawExchange, startHttpApp } from "../support/sidecar-apps.ts";
import type { SidecarPair } from "../support/sidecar-mesh.ts";
import { policySet, startPair } from "../support/sidecar-mesh.ts";

/**
 * Framing and path evasions, sent both through the caller's sidecar (A, over mTLS to B) and straight
 * to B's inbound listener as a plaintext client on a PERMISSIVE port. Whatever the trick, the request
 * is refused before the application and the application never sees the forbidden path.
 */

let app: App & { connections: () => number };
let pair: SidecarPair;

beforeAll(async () => {
  app = await startHttpApp();
  pair = await startPair({
    appPorts: [app.port],
    configB: { inbound: { host: "127.0.0.1", port: 0, plaintextAppPort: app.port } },
  });
  pair.b.policy.update({
    policies: policySet(`
apiVersion: sigil.dev/v1
kind: AuthorizationPolicy
metadata: { name: api }
spec:
  selector: { matchLabels: { app: api } }
  ingress:
    - action: allow
      from: [ { matchLabels: { app: web } }, { cidrs: [ "127.0.0.0/8" ] } ]
      http: { methods: [ GET, POST ], paths: [ "/api/public/**" ] }
    - action: deny
      http: { paths: [ "/api/admin/**" ] }
---
apiVersion: sigil.dev/v1
kind: PeerAuthentication
metadata: { name: api-permissive }
spec:
  selector: { matchLabels: { app: api } }
  mode: PERMISSIVE
`),
  });
});

afterAll(async () => {
  await pair?.close();
  await app?.close();
});

const entrances = (): [string, number][] => [
  ["through the caller's sidecar", pair.outboundPort(app.port)],
  ["straight to the callee's sidecar", pair.b.sidecar.inbound.port],
];

function statusOf(response: string): number {
  const m = /^HTTP\/1\.1 (\d{3}) /.exec(response);
  return m ? Number(m[1]) : 0;
}

const framing: [string, string][] = [
  [
    "duplicate Content-Length",
    "POST /api/public/x HTTP/1.1\r\nHost: api\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
  ],
  [
    "differing Content-Length",
    "POST /api/public/x HTTP/1.1\r\nHost: api\r\nContent-Length: 5\r\nContent-Length: 45\r\n\r\nhello",
  ],
  [
    "Content-Length with Transfer-Encoding smuggling a second request",
    "POST /api/public/x HTTP/1.1\r\nHost: api\r\nContent-Length: 44\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /api/admin/x HTTP/1.1\r\nHost: api\r\n\r\n",
  ],
  [
    "Transfer-Encoding other than chunked",
    "POST /api/public/x HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: gzip\r\n\r\n",
  ],
  [
    "obfuscated Transfer-Encoding",
    "POST /api/public/x HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
  ],
  ["obs-fold header continuation", "GET /api/public/x HTTP/1.1\r\nHost: api\r\nX-A: b\r\n c\r\n\r\n"],
  ["bare LF line endings", "GET /api/public/x HTTP/1.1\nHost: api\n\n"],
  ["bare CR inside the head", "GET /api/public/x HTTP/1.1\r\nHost: api\rX-Y: z\r\n\r\n"],
  ["space before the colon", "POST /api/public/x HTTP/1.1\r\nHost: api\r\nContent-Length : 5\r\n\r\nhello"],
  ["two Host headers", "GET /api/public/x HTTP/1.1\r\nHost: api\r\nHost: admin\r\n\r\n"],
  ["an oversized head", `GET /api/public/x HTTP/1.1\r\nHost: api\r\nX-Big: ${"a".repeat(20_000)}\r\n\r\n`],
  ["a lower-case method", "get /api/public/x HTTP/1.1\r\nHost: api\r\n\r\n"],
  [
    "Transfer-Encoding before Content-Length smuggling a second request",
    "POST /api/public/x HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n5c\r\nGET /api/admin/x HTTP/1.1\r\nHost: api\r\n\r\n0\r\n\r\n",
  ],
  [
    "a transfer-coding list ending in identity",
    "POST /api/public/x HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
  ],
  ["a NUL in a header value", "GET /api/public/x HTTP/1.1\r\nHost: api\r\nX-A: a\x00b\r\n\r\n"],
  [
    "a header injected through a bare LF",
    "GET /api/public/x HTTP/1.1\r\nHost: api\r\nX-A: a\nTransfer-Encoding: chunked\r\n\r\n",
  ],
  [
    "a malformed chunk size hiding a second request",
    "POST /api/public/x HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: chunked\r\n\r\n0x0\r\n\r\nGET /api/admin/x HTTP/1.1\r\nHost: api\r\n\r\n",
  ],
  ["an authority-form target", "CONNECT api:443 HTTP/1.1\r\nHost: api\r\n\r\n"],
];

const paths: [string, string, 400 | 403][] = [
  ["dot segments", "/api/public/../admin/x", 403],
  ["encoded dot segments", "/api/public/%2e%2e/admin/x", 403],
  ["an encoded slash", "/api/public/..%2fadmin/x", 400],
  ["an encoded backslash", "/api/public/..%5cadmin/x", 400],
  ["an encoded NUL", "/api/public/x%00/../../admin/x", 400],
  ["a double slash", "/api/public//..//admin/x", 403],
  ["a leading double slash", "//api/admin/x", 400],
  ["a ; parameter hiding dot segments", "/api/public/..;/admin/x", 403],
  ["an absolute-form target", "http://api/api/admin/x", 403],
  ["invalid percent-encoding", "/api/public/%zz", 400],
  ["a raw backslash", "/api/public\\..\\admin/x", 400],
];

describe.each([0, 1])("evasions, entrance %i", (entrance) => {
  it.each(framing)("refuses %s with 400 and closes the connection", async (_name, request) => {
    const [, port] = entrances()[entrance] as [string, number];
    const res = await rawExchange(port, request);
    expect(statusOf(res.data)).toBe(400);
    expect(res.data).toMatch(/connection: close/i);
  });

  it.each(paths)("refuses a path with %s", async (_name, target, status) => {
    const [, port] = entrances()[entrance] as [string, number];
    const conn = await RawHttpConnection.open(port);
    try {
      const res = await conn.request(`GET ${target} HTTP/1.1\r\nHost: api\r\n\r\n`);
      expect(res.status).toBe(status);
    } finally {
      conn.close();
    }
  });
});

describe("what reached the application", () => {
  it("never a forbidden path and never a refused request", () => {
    expect(app.seen.filter((r) => /admin/i.test(r.url))).toEqual([]);
    expect(app.seen).toEqual([]);
  });

  it("answers pipelined requests in order, each decided on its own", async () => {
    const res = await rawExchange(
      pair.outboundPort(app.port),
      "GET /api/public/one HTTP/1.1\r\nHost: api\r\n\r\n" +
        "GET /api/admin/two HTTP/1.1\r\nHost: api\r\n\r\n" +
        "GET /api/public/three HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n",
    );
    const statuses = [...res.data.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => Number(m[1]));
    expect(statuses).toEqual([200, 403, 200]);
    expect(app.seen.map((r) => r.url)).toEqual(["/api/public/one", "/api/public/three"]);
  });

  it("reports plaintext clients on a PERMISSIVE port as unauthenticated", async () => {
    const conn = await RawHttpConnection.open(pair.b.sidecar.inbound.port);
    try {
      expect((await conn.request("GET /api/public/plain HTTP/1.1\r\nHost: api\r\n\r\n")).status).toBe(200);
    } finally {
      conn.close();
    }
    const flow = await pair.b.flows.next((r) => r.http?.path === "/api/public/plain");
    expect(flow.encrypted).toBe(false);
    expect(flow.source.spiffeId).toBeUndefined();
    expect(flow.source.address).toMatch(/127\.0\.0\.1$/);
  });
});
