import net from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { App, HttpApp } from "../support/sidecar-apps.ts";
import { RawHttpConnection, startHttpApp, startTcpApp } from "../support/sidecar-apps.ts";
import type { SidecarPair } from "../support/sidecar-mesh.ts";
import { policySet, startPair } from "../support/sidecar-mesh.ts";

/** The loopback admin server and graceful drain. */

let app: HttpApp;
let tcp: App;
let pair: SidecarPair;

beforeAll(async () => {
  app = await startHttpApp();
  tcp = await startTcpApp("echo");
  pair = await startPair({ appPorts: [app.port, tcp.port], configA: { drainTimeoutMs: 2000 } });
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
      ports: [ ${app.port} ]
      http: { paths: [ "/ok", "/hold" ] }
    - action: allow
      from: [ { matchLabels: { app: web } } ]
      ports: [ ${tcp.port} ]
`),
  });
});

afterAll(async () => {
  await pair?.close();
  await app?.close();
  await tcp?.close();
});

async function admin(port: number, path: string): Promise<{ status: number; text: string }> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`);
  return { status: res.status, text: await res.text() };
}

describe("admin server", () => {
  it("listens on loopback and reports readiness", async () => {
    expect(pair.b.sidecar.admin.address).toBe("127.0.0.1");
    expect(await admin(pair.b.sidecar.admin.port, "/ready")).toEqual({ status: 200, text: "LIVE\n" });
    expect((await admin(pair.b.sidecar.admin.port, "/nope")).status).toBe(404);
  });

  it("exports requests, denials by reason, handshakes, latency and connections", async () => {
    const conn = await RawHttpConnection.open(pair.outboundPort(app.port));
    try {
      expect((await conn.request("GET /ok HTTP/1.1\r\nHost: api\r\n\r\n")).status).toBe(200);
      expect((await conn.request("GET /no HTTP/1.1\r\nHost: api\r\n\r\n")).status).toBe(403);
      const { text } = await admin(pair.b.sidecar.admin.port, "/stats/prometheus");
      expect(text).toMatch(
        /sigil_sidecar_requests_total\{direction="ingress",protocol="http",verdict="allow"\} [1-9]/,
      );
      expect(text).toMatch(/sigil_sidecar_denials_total\{direction="ingress",reason="default-deny"\} [1-9]/);
      expect(text).toMatch(/sigil_sidecar_tls_handshakes_total\{side="server",result="ok"\} [1-9]/);
      expect(text).toMatch(
        /sigil_sidecar_request_duration_seconds_count\{direction="ingress",protocol="http"\} [1-9]/,
      );
      expect(text).toMatch(/sigil_sidecar_active_connections\{direction="ingress"\} [1-9]/);
      const outbound = await admin(pair.a.sidecar.admin.port, "/stats/prometheus");
      expect(outbound.text).toMatch(/sigil_sidecar_tls_handshakes_total\{side="client",result="ok"\} [1-9]/);
    } finally {
      conn.close();
    }
  });

  it("exports the process's memory by kind and the V8 heap by space", async () => {
    const { text } = await admin(pair.b.sidecar.admin.port, "/stats/prometheus");
    for (const kind of ["rss", "heap_total", "heap_used", "external", "array_buffers"]) {
      expect(text).toMatch(new RegExp(`sigil_sidecar_memory_bytes\\{kind="${kind}"\\} \\d`));
    }
    const bytes = (kind: string): number =>
      Number(new RegExp(`sigil_sidecar_memory_bytes\\{kind="${kind}"\\} (\\d+)`).exec(text)?.[1]);
    // The resident set holds the used heap; the used heap fits in the reserved one.
    expect(bytes("heap_used")).toBeGreaterThan(0);
    expect(bytes("rss")).toBeGreaterThan(bytes("heap_used"));
    expect(bytes("heap_total")).toBeGreaterThanOrEqual(bytes("heap_used"));
    expect(text).toMatch(/sigil_sidecar_heap_space_bytes\{space="new_space",kind="size"\} [1-9]/);
    expect(text).toMatch(/sigil_sidecar_heap_space_bytes\{space="old_space",kind="used"\} [1-9]/);
  });

  it("dumps configuration and identity without key material", async () => {
    const { status, text } = await admin(pair.b.sidecar.admin.port, "/config_dump");
    expect(status).toBe(200);
    const dump = JSON.parse(text);
    expect(dump.identity).toMatchObject({ spiffeId: pair.pki.spiffeId("api"), labels: { app: "api" } });
    expect(dump.enforcement).toBe("enforce");
    expect(dump.config.mode).toBe("explicit");
    expect(text).not.toMatch(/PRIVATE KEY/);
  });
});

describe("graceful drain", () => {
  it("finishes requests in flight, closes keep-alive connections, refuses new ones and cuts what outlives the timeout", async () => {
    const idle = await RawHttpConnection.open(pair.outboundPort(app.port));
    expect((await idle.request("GET /ok HTTP/1.1\r\nHost: api\r\n\r\n")).status).toBe(200);
    const stuck = net.connect({ port: pair.outboundPort(tcp.port), host: "127.0.0.1", allowHalfOpen: true });
    stuck.on("error", () => undefined);
    await new Promise<void>((resolve) => stuck.once("connect", () => resolve()));
    stuck.write("never ends");
    const stuckClosed = new Promise<void>((resolve) => stuck.once("close", () => resolve()));

    // Opened right before use: a client silent for longer than the detection timeout is opaque TCP.
    const busy = await RawHttpConnection.open(pair.outboundPort(app.port));
    const response = busy.request("GET /hold HTTP/1.1\r\nHost: api\r\n\r\n");
    await app.held();
    const drained = pair.a.sidecar.drain();
    expect((await admin(pair.a.sidecar.admin.port, "/ready")).status).toBe(503);
    const refused = await new Promise<boolean>((resolve) => {
      const s = net.connect(pair.outboundPort(app.port), "127.0.0.1");
      s.on("error", () => resolve(true));
      s.on("connect", () => s.once("close", () => resolve(true)));
    });
    expect(refused).toBe(true);
    app.release();
    const res = await response;
    expect(res.status).toBe(200);
    expect(res.body).toBe("released");
    expect(res.headers.connection).toBe("close");
    const { clean } = await drained;
    // The opaque TCP connection never finished, so the drain timeout cut it.
    expect(clean).toBe(false);
    await stuckClosed;
    expect(idle.closed).toBe(true);
    busy.close();
    idle.close();
  });
});
