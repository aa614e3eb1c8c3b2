import http2 from "node:http2";
import net from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { App, HttpApp } from "../support/sidecar-apps.ts";
import { RawHttpConnection, startH2App, startHttpApp, startTcpApp } from "../support/sidecar-apps.ts";
import type { SidecarPair } from "../support/sidecar-mesh.ts";
import { policySet, startPair } from "../support/sidecar-mesh.ts";

/** Outbound targets with a declared protocol are not sniffed. */

let http1: HttpApp;
let h2: App;
let tcp: App;
let pair: SidecarPair;

beforeAll(async () => {
  http1 = await startHttpApp();
  h2 = await startH2App();
  tcp = await startTcpApp("echo");
  pair = await startPair({
    appPorts: [http1.port, h2.port, tcp.port],
    protocols: { [http1.port]: "http1", [h2.port]: "h2", [tcp.port]: "tcp" },
    // Sniffing would give up at once: only the declarations make these work.
    configA: { detectTimeoutMs: 1 },
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
      from: [ { matchLabels: { app: web } } ]
      ports: [ ${http1.port}, ${h2.port} ]
      http: { paths: [ "/api/**" ] }
    - action: allow
      from: [ { matchLabels: { app: web } } ]
      ports: [ ${tcp.port} ]
`),
  });
});

afterAll(async () => {
  await pair?.close();
  await Promise.all([http1?.close(), h2?.close(), tcp?.close()]);
});

describe("declared outbound protocols", () => {
  it("treats a declared HTTP/1.1 target as HTTP whenever the client speaks", async () => {
    const conn = await RawHttpConnection.open(pair.outboundPort(http1.port));
    try {
      expect((await conn.request("GET /api/declared HTTP/1.1\r\nHost: api\r\n\r\n")).status).toBe(200);
      expect((await conn.request("GET /other HTTP/1.1\r\nHost: api\r\n\r\n")).status).toBe(403);
    } finally {
      conn.close();
    }
  });

  it("treats a declared HTTP/2 target as HTTP/2", async () => {
    const session = http2.connect(`http://127.0.0.1:${pair.outboundPort(h2.port)}`);
    try {
      const req = session.request({ ":path": "/api/h2" });
      req.end();
      const status = await new Promise<number>((resolve, reject) => {
        req.on("response", (h) => resolve(Number(h[":status"])));
        req.on("error", reject);
      });
      expect(status).toBe(200);
    } finally {
      session.close();
    }
  });

  it("carries HTTP-looking bytes to a declared TCP target as opaque TCP", async () => {
    const payload = "GET /not/parsed HTTP/1.1\r\n\r\n";
    const reply = await new Promise<string>((resolve, reject) => {
      const socket = net.connect(
        { port: pair.outboundPort(tcp.port), host: "127.0.0.1", allowHalfOpen: true },
        () => socket.end(payload),
      );
      let data = "";
      socket.on("data", (c: Buffer) => (data += c.toString()));
      socket.on("end", () => resolve(data));
      socket.on("error", reject);
    });
    expect(reply).toBe(`got ${payload.length} bytes: ${payload}`);
    const flow = await pair.b.flows.next((r) => r.port === tcp.port);
    expect(flow).toMatchObject({ protocol: "tcp", verdict: "allow" });
  });
});
