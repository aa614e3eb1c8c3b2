import net from "node:net";
import type { TLSSocket } from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { App, HttpApp } from "../support/sidecar-apps.ts";
import { rawExchange, startHttpApp, startTcpApp } from "../support/sidecar-apps.ts";
import type { SidecarPair } from "../support/sidecar-mesh.ts";
import { policySet, startPair } from "../support/sidecar-mesh.ts";

/**
 * `inbound.httpPorts` on a real sidecar pair on loopback: B serves its HTTP app's port as HTTP only.
 * A caller allowed on the port at connection level could otherwise ask for an opaque TCP tunnel
 * (mesh ALPN `tcp`), or as a plaintext client say nothing until detection gives up, and then write
 * raw HTTP — with its own x-forwarded-client-cert, past per-request policy — straight to the app.
 * Both are refused on a declared port and still carried on an undeclared one.
 */

let http: HttpApp;
let echo: App;
let pair: SidecarPair;

beforeAll(async () => {
  http = await startHttpApp();
  echo = await startTcpApp("echo");
  pair = await startPair({
    appPorts: [http.port, echo.port],
    configB: { inbound: { host: "127.0.0.1", port: 0, httpPorts: [http.port], plaintextAppPort: http.port } },
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
      ports: [ ${http.port}, ${echo.port} ]
---
apiVersion: sigil.dev/v1
kind: PeerAuthentication
metadata: { name: api-peer-auth }
spec:
  selector: { matchLabels: { app: api } }
  mode: PERMISSIVE
`),
  });
});

afterAll(async () => {
  await pair?.close();
  await http?.close();
  await echo?.close();
});

/** Opens a mesh connection to B as A's workload would, asking for an opaque tunnel to `port`. */
function tunnelTo(port: number): Promise<TLSSocket> {
  return pair.meshConnect(pair.a.credentials.current(), "tcp", port);
}

/** Everything the server sends until it closes (or resets) the connection. */
async function readToClose(socket: net.Socket): Promise<string> {
  let data = "";
  socket.on("data", (c: Buffer) => (data += c.toString("latin1")));
  await new Promise((resolve) => socket.once("close", resolve));
  return data;
}

const FORGED_REQUEST =
  "GET /forged HTTP/1.1\r\nHost: api\r\nX-Forwarded-Client-Cert: URI=spiffe://sigil.local/admin\r\nConnection: close\r\n\r\n";

describe("inbound.httpPorts", () => {
  it("serves the declared port as HTTP through the mesh", async () => {
    const res = await rawExchange(
      pair.outboundPort(http.port),
      "GET /through-mesh HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n",
    );
    expect(res.data).toMatch(/^HTTP\/1\.1 200 /);
    expect(http.seen.some((r) => r.url === "/through-mesh")).toBe(true);
  });

  it("refuses a mesh tunnel asked for the declared port, naming why, and the app sees nothing", async () => {
    const socket = await tunnelTo(http.port);
    const closed = readToClose(socket);
    socket.write(FORGED_REQUEST);
    expect(await closed).toBe("");
    const refusal = await pair.b.flows.next(
      (r) => r.reason.startsWith("http-only:") && r.source.spiffeId !== undefined,
    );
    expect(refusal).toMatchObject({ verdict: "deny", port: http.port, direction: "ingress" });
    expect(refusal.source.spiffeId).toBe(pair.pki.spiffeId("web"));
    expect(http.seen.some((r) => r.url === "/forged")).toBe(false);
  });

  it("still carries a mesh tunnel to a port not declared HTTP", async () => {
    const socket = await tunnelTo(echo.port);
    const closed = readToClose(socket);
    socket.end("raw bytes");
    expect(await closed).toBe("got 9 bytes: raw bytes");
  });

  it("refuses a plaintext client whose first bytes do not come in time, and serves one that speaks HTTP", async () => {
    const silent = net.connect(pair.b.sidecar.inbound.port, "127.0.0.1");
    silent.on("error", () => undefined);
    const closed = readToClose(silent);
    const refusal = await pair.b.flows.next(
      (r) => r.reason.startsWith("http-only:") && r.source.spiffeId === undefined,
    );
    expect(refusal.reason).toMatch(/first bytes were not HTTP \(or none came within 200 ms\)/);
    await closed;
    expect(silent.bytesWritten).toBe(0);

    const served = await rawExchange(
      pair.b.sidecar.inbound.port,
      "GET /plaintext HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n",
    );
    expect(served.data).toMatch(/^HTTP\/1\.1 200 /);
  });
});
