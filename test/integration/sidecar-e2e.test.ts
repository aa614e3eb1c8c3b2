import { once } from "node:events";
import http2 from "node:http2";
import net from "node:net";
import * as grpc from "@grpc/grpc-js";
import { Client, WebSocket } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { App } from "../support/sidecar-apps.ts";
import {
  EchoClient,
  RawHttpConnection,
  rawExchange,
  startGrpcApp,
  startH2App,
  startHttpApp,
  startTcpApp,
} from "../support/sidecar-apps.ts";
import type { SidecarPair } from "../support/sidecar-mesh.ts";
import { TRUST_DOMAIN, policySet, startPair } from "../support/sidecar-mesh.ts";
import { RevocationIndex, canonicalSerial } from "../../core/svid/revocation.ts";

/**
 * Acceptance: client → sidecar A (explicit outbound) → mTLS → sidecar B (inbound) → application,
 * on loopback, for every protocol the data path carries, with B's ingress policy deciding.
 */

let httpApp: App & { connections: () => number };
let h2App: App;
let grpcApp: { port: number; close(): Promise<void> };
let tcpApp: App;
let bannerApp: App;
let closedPort: number;
let pair: SidecarPair;

function ingressPolicy(opts: { denyOrders?: boolean } = {}): string {
  return `
apiVersion: sigil.dev/v1
kind: AuthorizationPolicy
metadata: { name: api-ingress }
spec:
  selector: { matchLabels: { app: api } }
  ingress:
    - action: allow
      from: [ { matchLabels: { app: web } } ]
      ports: [ ${httpApp.port}, ${h2App.port} ]
      http: { methods: [ GET, POST ], paths: [ "/api/**", "/stream/*", "/ws" ] }
    - action: allow
      from: [ { matchLabels: { app: web } } ]
      ports: [ ${grpcApp.port} ]
      http:
        paths: [ "/sigil.test.Echo/Unary", "/sigil.test.Echo/ServerStream", "/sigil.test.Echo/Bidi", "/sigil.test.Echo/Fail" ]
    - action: allow
      from: [ { matchLabels: { app: web } } ]
      ports: [ ${tcpApp.port}, ${bannerApp.port} ]
    - action: deny
      from: [ { matchLabels: { app: web } } ]
      ports: [ ${httpApp.port} ]
      http: { paths: [ "/api/admin/**"${opts.denyOrders ? ', "/api/orders"' : ""} ] }
`;
}

beforeAll(async () => {
  httpApp = await startHttpApp();
  h2App = await startH2App();
  grpcApp = await startGrpcApp();
  tcpApp = await startTcpApp("echo");
  bannerApp = await startTcpApp("banner");
  const placeholder = net.createServer();
  await new Promise<void>((r) => placeholder.listen(0, "127.0.0.1", r));
  closedPort = (placeholder.address() as net.AddressInfo).port;
  await new Promise<void>((r) => placeholder.close(() => r()));
  pair = await startPair({
    appPorts: [httpApp.port, h2App.port, grpcApp.port, tcpApp.port, bannerApp.port, closedPort],
  });
  pair.b.policy.update({ policies: policySet(ingressPolicy()) });
});

afterAll(async () => {
  await pair?.close();
  await Promise.all([
    httpApp?.close(),
    h2App?.close(),
    grpcApp?.close(),
    tcpApp?.close(),
    bannerApp?.close(),
  ]);
});

describe("HTTP/1.1 through a sidecar pair", () => {
  it("forwards an allowed request over mTLS and reports both sides of the flow", async () => {
    const client = new Client(`http://127.0.0.1:${pair.outboundPort(httpApp.port)}`);
    try {
      const res = await client.request({
        method: "POST",
        path: "/api/items?x=1",
        body: "hello",
        headers: { "content-type": "text/plain" },
      });
      expect(res.statusCode).toBe(200);
      expect(res.headers["x-app"]).toBe("http1");
      expect(await res.body.json()).toEqual({ method: "POST", url: "/api/items?x=1", body: "hello" });
    } finally {
      await client.close();
    }
    const ingress = await pair.b.flows.next((r) => r.http?.path === "/api/items");
    expect(ingress).toMatchObject({
      direction: "ingress",
      verdict: "allow",
      policy: "api-ingress/ingress/0",
      encrypted: true,
      protocol: "http",
      port: httpApp.port,
      source: { spiffeId: pair.pki.spiffeId("web"), labels: { app: "web" } },
      destination: { spiffeId: pair.pki.spiffeId("api") },
      http: { method: "POST", status: 200 },
      bytesReceived: 5,
    });
    const egress = await pair.a.flows.next((r) => r.http?.path === "/api/items");
    expect(egress).toMatchObject({ direction: "egress", verdict: "allow", encrypted: true });
  });

  it("streams a chunked response without buffering it whole", async () => {
    const client = new Client(`http://127.0.0.1:${pair.outboundPort(httpApp.port)}`);
    try {
      const res = await client.request({ method: "GET", path: "/stream/50" });
      expect(res.statusCode).toBe(200);
      expect(res.headers["transfer-encoding"]).toBe("chunked");
      const text = await res.body.text();
      expect(text.split(";").filter(Boolean)).toHaveLength(50);
    } finally {
      await client.close();
    }
  });

  it("answers 403 with a JSON body naming the deciding rule, and the app never sees it", async () => {
    const before = httpApp.seen.length;
    const conn = await RawHttpConnection.open(pair.outboundPort(httpApp.port));
    try {
      const denied = await conn.request("GET /api/admin/users HTTP/1.1\r\nHost: api\r\n\r\n");
      expect(denied.status).toBe(403);
      expect(JSON.parse(denied.body)).toMatchObject({ error: "forbidden", policy: "api-ingress/ingress/3" });
      const defaulted = await conn.request("DELETE /api/items HTTP/1.1\r\nHost: api\r\n\r\n");
      expect(defaulted.status).toBe(403);
      expect(JSON.parse(defaulted.body).reason).toMatch(/default deny/);
    } finally {
      conn.close();
    }
    expect(httpApp.seen.length).toBe(before);
    const flow = await pair.b.flows.next((r) => r.http?.path === "/api/admin/users");
    expect(flow).toMatchObject({ verdict: "deny", policy: "api-ingress/ingress/3", http: { status: 403 } });
  });

  it("applies a policy change to the next request on the same keep-alive connection", async () => {
    const conn = await RawHttpConnection.open(pair.outboundPort(httpApp.port));
    try {
      const first = await conn.request("GET /api/orders HTTP/1.1\r\nHost: api\r\n\r\n");
      expect(first.status).toBe(200);
      pair.b.policy.update({ policies: policySet(ingressPolicy({ denyOrders: true })) });
      const second = await conn.request("GET /api/orders HTTP/1.1\r\nHost: api\r\n\r\n");
      expect(second.status).toBe(403);
      expect(JSON.parse(second.body).policy).toBe("api-ingress/ingress/3");
      pair.b.policy.update({ policies: policySet(ingressPolicy()) });
      const third = await conn.request("GET /api/orders HTTP/1.1\r\nHost: api\r\n\r\n");
      expect(third.status).toBe(200);
      expect(conn.closed).toBe(false);
    } finally {
      conn.close();
      pair.b.policy.update({ policies: policySet(ingressPolicy()) });
    }
  });

  it("forwards the normalized path, so dot segments and encodings cannot reach a denied path", async () => {
    const conn = await RawHttpConnection.open(pair.outboundPort(httpApp.port));
    try {
      const sneaky = await conn.request("GET /api/public/../admin/users HTTP/1.1\r\nHost: api\r\n\r\n");
      expect(sneaky.status).toBe(403);
      const encoded = await conn.request("GET /api/%61dmin/users HTTP/1.1\r\nHost: api\r\n\r\n");
      expect(encoded.status).toBe(403);
      const merged = await conn.request("GET /api//items/./x HTTP/1.1\r\nHost: api\r\n\r\n");
      expect(merged.status).toBe(200);
      expect(JSON.parse(merged.body).url).toBe("/api/items/x");
    } finally {
      conn.close();
    }
    expect(httpApp.seen.some((r) => r.url.includes("admin"))).toBe(false);
  });
});

describe("WebSocket through a sidecar pair", () => {
  it("upgrades and carries frames both ways", async () => {
    const ws = new WebSocket(`ws://127.0.0.1:${pair.outboundPort(httpApp.port)}/ws`);
    try {
      const reply = await new Promise<string>((resolve, reject) => {
        ws.addEventListener("open", () => ws.send("ping"));
        ws.addEventListener("message", (ev) => resolve(String(ev.data)));
        ws.addEventListener("error", () => reject(new Error("websocket error")));
      });
      expect(reply).toBe("echo:ping");
    } finally {
      ws.close();
    }
    expect(httpApp.seen.some((r) => r.url === "/ws" && r.headers.upgrade === "websocket")).toBe(true);
  });

  it("refuses an upgrade to a path the policy does not allow", async () => {
    const res = await rawExchange(
      pair.outboundPort(httpApp.port),
      "GET /private HTTP/1.1\r\nHost: api\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    );
    expect(res.data).toMatch(/^HTTP\/1\.1 403/);
  });
});

describe("HTTP/2 through a sidecar pair", () => {
  it("cuts the shared session to a callee whose certificate is revoked by serial; the next stream is refused at the handshake", async () => {
    const session = http2.connect(`http://127.0.0.1:${pair.outboundPort(h2App.port)}`);
    const get = (path: string): Promise<{ status: number; body: string }> =>
      new Promise((resolve, reject) => {
        const req = session.request({ ":method": "GET", ":path": path });
        req.end();
        let status = 0;
        let body = "";
        req.on("response", (h) => (status = Number(h[":status"])));
        req.on("data", (c: Buffer) => (body += c.toString()));
        req.on("end", () => resolve({ status, body }));
        req.on("error", reject);
      });
    const serial = canonicalSerial(pair.b.sidecar.identity().serial);
    try {
      expect((await get("/api/h2-before-serial")).status).toBe(200);
      pair.a.policy.update({
        revocations: new RevocationIndex({
          trustDomain: TRUST_DOMAIN,
          sequence: 1,
          entries: [],
          certificates: [
            {
              serial,
              spiffeId: pair.pki.spiffeId("api"),
              revokedAtMs: Date.now(),
              expiresAtMs: Date.now() + 3_600_000,
              reason: "key leaked",
            },
          ],
        }),
      });
      const refused = await get("/api/h2-after-serial");
      expect(refused.status).toBe(502);
      expect(JSON.parse(refused.body).reason).toMatch(
        new RegExp(`certificate ${serial} of .* \\(key leaked\\)$`),
      );
    } finally {
      session.close();
      pair.a.policy.update({ revocations: RevocationIndex.empty(TRUST_DOMAIN) });
    }
  });

  it("forwards a request and its trailers", async () => {
    const session = http2.connect(`http://127.0.0.1:${pair.outboundPort(h2App.port)}`);
    try {
      const req = session.request({ ":method": "POST", ":path": "/api/h2" });
      req.end("h2-body");
      const result = await new Promise<{ status: number; body: string; trailers: http2.IncomingHttpHeaders }>(
        (resolve, reject) => {
          let status = 0;
          let body = "";
          let trailers: http2.IncomingHttpHeaders = {};
          req.on("response", (h) => (status = Number(h[":status"])));
          req.on("trailers", (t) => (trailers = t));
          req.on("data", (c: Buffer) => (body += c.toString()));
          req.on("end", () => resolve({ status, body, trailers }));
          req.on("error", reject);
        },
      );
      expect(result.status).toBe(200);
      expect(JSON.parse(result.body)).toEqual({ path: "/api/h2", body: "h2-body" });
      expect(result.trailers["x-h2-trailer"]).toBe("done");
      const denied = session.request({ ":method": "GET", ":path": "/other" });
      denied.end();
      const deniedStatus = await new Promise<number>((resolve) =>
        denied.on("response", (h) => resolve(Number(h[":status"]))),
      );
      expect(deniedStatus).toBe(403);
    } finally {
      session.close();
    }
  });
});

describe("gRPC through a sidecar pair", () => {
  let client: InstanceType<typeof EchoClient>;
  beforeAll(() => {
    client = new EchoClient(
      `127.0.0.1:${pair.outboundPort(grpcApp.port)}`,
      grpc.credentials.createInsecure(),
    );
  });
  afterAll(() => client.close());

  it("carries a unary call with its trailers", async () => {
    const trailers = new Promise<grpc.Metadata>((resolve) => {
      const call = client.makeUnaryRequest(
        "/sigil.test.Echo/Unary",
        (b: Buffer) => b,
        (b: Buffer) => b,
        Buffer.from("hi"),
        (err, res) => {
          expect(err).toBeNull();
          expect(res?.toString()).toBe("unary:hi");
        },
      );
      call.on("status", (s: grpc.StatusObject) => resolve(s.metadata));
    });
    expect((await trailers).get("x-trailer")).toEqual(["unary"]);
  });

  it("carries server streaming and bidi streaming with trailers", async () => {
    const items: string[] = [];
    const status = await new Promise<grpc.StatusObject>((resolve, reject) => {
      const call = client.makeServerStreamRequest(
        "/sigil.test.Echo/ServerStream",
        (b: Buffer) => b,
        (b: Buffer) => b,
        Buffer.from("5"),
      );
      call.on("data", (m: Buffer) => items.push(m.toString()));
      call.on("status", resolve);
      call.on("error", reject);
    });
    expect(items).toEqual(["item-0", "item-1", "item-2", "item-3", "item-4"]);
    expect(status.code).toBe(grpc.status.OK);
    expect(status.metadata.get("x-trailer")).toEqual(["streamed-5"]);

    const echoed: string[] = [];
    const bidiStatus = await new Promise<grpc.StatusObject>((resolve, reject) => {
      const call = client.makeBidiStreamRequest(
        "/sigil.test.Echo/Bidi",
        (b: Buffer) => b,
        (b: Buffer) => b,
      );
      call.on("data", (m: Buffer) => {
        echoed.push(m.toString());
        if (echoed.length === 1) call.write(Buffer.from("two"));
        else call.end();
      });
      call.on("status", resolve);
      call.on("error", reject);
      call.write(Buffer.from("one"));
    });
    expect(echoed).toEqual(["bidi:one", "bidi:two"]);
    expect(bidiStatus.metadata.get("x-trailer")).toEqual(["bidi"]);
  });

  it("passes an application error status and its trailers through unchanged", async () => {
    const err = await new Promise<grpc.ServiceError>((resolve) =>
      client.makeUnaryRequest(
        "/sigil.test.Echo/Fail",
        (b: Buffer) => b,
        (b: Buffer) => b,
        Buffer.alloc(0),
        (e) => resolve(e as grpc.ServiceError),
      ),
    );
    expect(err.code).toBe(grpc.status.NOT_FOUND);
    expect(err.details).toBe("no such thing");
    expect(err.metadata.get("x-trailer")).toEqual(["failed"]);
  });

  it("answers a denied method with PERMISSION_DENIED (7) in a trailers-only response", async () => {
    const err = await new Promise<grpc.ServiceError>((resolve) =>
      client.makeUnaryRequest(
        "/sigil.test.Echo/Secret",
        (b: Buffer) => b,
        (b: Buffer) => b,
        Buffer.alloc(0),
        (e) => resolve(e as grpc.ServiceError),
      ),
    );
    expect(err.code).toBe(grpc.status.PERMISSION_DENIED);
    expect(err.details).toMatch(/^permission denied: .*default deny/);
    const flow = await pair.b.flows.next((r) => r.http?.path === "/sigil.test.Echo/Secret");
    expect(flow).toMatchObject({ protocol: "grpc", verdict: "deny" });
  });
});

describe("raw TCP through a sidecar pair", () => {
  it("carries bytes both ways with half-close", async () => {
    const reply = await new Promise<string>((resolve, reject) => {
      const socket = net.connect(
        { port: pair.outboundPort(tcpApp.port), host: "127.0.0.1", allowHalfOpen: true },
        () => {
          socket.end("opaque\x00bytes");
        },
      );
      let data = "";
      socket.on("data", (c: Buffer) => (data += c.toString("latin1")));
      socket.on("end", () => resolve(data));
      socket.on("error", reject);
    });
    expect(reply).toBe("got 12 bytes: opaque\x00bytes");
    const flow = await pair.b.flows.next(
      (r) => r.protocol === "tcp" && r.port === tcpApp.port && r.bytesReceived === 12,
    );
    expect(flow).toMatchObject({ verdict: "allow", encrypted: true, policy: "api-ingress/ingress/2" });
  });

  it("carries a server-speaks-first protocol after the detection timeout", async () => {
    const banner = await new Promise<string>((resolve, reject) => {
      const socket = net.connect(pair.outboundPort(bannerApp.port), "127.0.0.1");
      socket.once("data", (c: Buffer) => {
        resolve(c.toString());
        socket.destroy();
      });
      socket.on("error", reject);
    });
    expect(banner).toBe("220 ready\r\n");
  });

  it("resets an open tunnel, on either side, once the other side's certificate is revoked by serial", async () => {
    /** A tunnel to the banner app, open end to end once the banner arrived; resolves when it closes. */
    const openTunnel = async (): Promise<{ closed: Promise<unknown> }> => {
      const socket = net.connect(pair.outboundPort(bannerApp.port), "127.0.0.1");
      socket.on("error", () => undefined);
      const closed = new Promise((resolve) => socket.once("close", resolve));
      await once(socket, "data", { signal: AbortSignal.timeout(5_000) });
      return { closed };
    };
    const within = (closed: Promise<unknown>): Promise<unknown> =>
      Promise.race([
        closed,
        new Promise((_, reject) =>
          setTimeout(() => reject(new Error("the tunnel stayed open")), 5_000).unref(),
        ),
      ]);
    const revoking = (serial: string, name: string): RevocationIndex =>
      new RevocationIndex({
        trustDomain: TRUST_DOMAIN,
        sequence: 1,
        entries: [],
        certificates: [
          {
            serial: canonicalSerial(serial),
            spiffeId: pair.pki.spiffeId(name),
            revokedAtMs: Date.now(),
            expiresAtMs: Date.now() + 3_600_000,
            reason: "key leaked",
          },
        ],
      });
    try {
      // The caller re-decides its outbound tunnel on the certificate the callee proved on the hop.
      const outbound = await openTunnel();
      pair.a.policy.update({ revocations: revoking(pair.b.sidecar.identity().serial, "api") });
      await within(outbound.closed);
      pair.a.policy.update({ revocations: RevocationIndex.empty(TRUST_DOMAIN) });
      // The callee re-decides its inbound tunnel on the certificate the caller presented.
      const inbound = await openTunnel();
      pair.b.policy.update({ revocations: revoking(pair.a.sidecar.identity().serial, "web") });
      await within(inbound.closed);
    } finally {
      pair.a.policy.update({ revocations: RevocationIndex.empty(TRUST_DOMAIN) });
      pair.b.policy.update({ revocations: RevocationIndex.empty(TRUST_DOMAIN) });
    }
  });

  it("refuses a connection no rule allows", async () => {
    const res = await rawExchange(pair.outboundPort(closedPort), "hello");
    expect(res.data).toBe("");
    const flow = await pair.b.flows.next((r) => r.port === closedPort);
    expect(flow).toMatchObject({ verdict: "deny", protocol: "tcp", policy: null });
  });
});
