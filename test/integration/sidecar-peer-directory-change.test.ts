import { once } from "node:events";
import http from "node:http";
import net from "node:net";
import type { AddressInfo, Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { SidecarPair } from "../support/sidecar-mesh.ts";
import { startPair, TRUST_DOMAIN } from "../support/sidecar-mesh.ts";

/**
 * A's egress allows only destinations labelled tier=gold. The peer directory says what the
 * destination is; when it changes while a client's keep-alive connection is open, the next request
 * on that connection is decided against the new entry.
 */

let app: http.Server;
let appPort: number;
let pair: SidecarPair;

function directory(labels: Record<string, string>): void {
  pair.a.peers.replace([
    [
      { address: "127.0.0.1", port: appPort },
      {
        identity: { spiffeId: pair.pki.spiffeId("api"), trustDomain: TRUST_DOMAIN, labels },
        sidecar: { host: "127.0.0.1", port: pair.b.sidecar.inbound.port },
        mtls: true,
      },
    ],
  ]);
}

beforeAll(async () => {
  app = http.createServer((req, res) => {
    req.resume();
    res.end("ok");
  });
  await new Promise<void>((resolve) => app.listen(0, "127.0.0.1", resolve));
  appPort = (app.address() as AddressInfo).port;
  pair = await startPair({
    appPorts: [appPort],
    policyA: `
apiVersion: sigil.dev/v1
kind: AuthorizationPolicy
metadata: { name: web-egress }
spec:
  selector: { matchLabels: { app: web } }
  egress: [ { action: allow, to: [ { matchLabels: { tier: gold } } ] } ]
`,
    policyB: `
apiVersion: sigil.dev/v1
kind: AuthorizationPolicy
metadata: { name: api-ingress }
spec:
  selector: { matchLabels: { app: api } }
  ingress: [ { action: allow } ]
`,
  });
});

afterAll(async () => {
  await pair?.close();
  await new Promise<void>((resolve) => app?.close(() => resolve()));
});

/** Reads one response with a Content-Length body from `socket`, returning its status. */
async function status(socket: Socket, path: string): Promise<number> {
  socket.write(`GET ${path} HTTP/1.1\r\nHost: api.local\r\n\r\n`);
  let buf = "";
  for (;;) {
    const [chunk] = (await once(socket, "data")) as [Buffer];
    buf += chunk.toString("latin1");
    const end = buf.indexOf("\r\n\r\n");
    const length = /content-length: *(\d+)/i.exec(buf);
    if (end >= 0 && length !== null && buf.length >= end + 4 + Number(length[1]))
      return Number(buf.slice(9, 12));
  }
}

describe("HTTP/1.1 egress and the peer directory", () => {
  it("decides the next request on an open connection against the directory's new entry", async () => {
    directory({ app: "api", tier: "gold" });
    const socket = net.connect(pair.outboundPort(appPort), "127.0.0.1");
    await once(socket, "connect");
    try {
      expect(await status(socket, "/one")).toBe(200);
      directory({ app: "api" });
      expect(await status(socket, "/two")).toBe(403);
      directory({ app: "api", tier: "gold" });
      expect(await status(socket, "/three")).toBe(200);
    } finally {
      socket.destroy();
    }
  });
});
