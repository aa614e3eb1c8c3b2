import { X509Certificate, createHash } from "node:crypto";
import { once } from "node:events";
import net from "node:net";
import type { AddressInfo, Socket } from "node:net";
import tls from "node:tls";
import type { TLSSocket } from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { bundleRootsPem } from "../../core/svid/bundle.ts";
import type { WorkloadCredentials } from "../../sidecar/sources.ts";
import type { SidecarPair } from "../support/sidecar-mesh.ts";
import { startPair } from "../support/sidecar-mesh.ts";

/**
 * Attacks on the caller identity B gives its application (x-forwarded-client-cert) that go through
 * protocol switches: whatever a caller sends, every HTTP request the application receives on a
 * connection B parsed carries B's own field and no other.
 */

const XFCC = "x-forwarded-client-cert";
const FORGED = "forged";

/**
 * An application that answers 101 to any request with an Upgrade field and then reads HTTP/1.1
 * again on the same connection (as an h2c server reads HTTP/2 after the switch): the worst case
 * for a proxy that splices after a 101. Records every head it reads.
 */
async function startSwitchingApp(): Promise<{ port: number; heads: string[]; close(): Promise<void> }> {
  const heads: string[] = [];
  const sockets = new Set<Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
    s.on("error", () => undefined);
    let buf = "";
    s.on("data", (c: Buffer) => {
      buf += c.toString("latin1");
      for (let end = buf.indexOf("\r\n\r\n"); end >= 0; end = buf.indexOf("\r\n\r\n")) {
        const head = buf.slice(0, end);
        buf = buf.slice(end + 4);
        heads.push(head);
        if (/^upgrade:/im.test(head))
          s.write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n");
        else if (/^connection: *close/im.test(head))
          s.end("HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
        else s.write("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as AddressInfo).port,
    heads,
    close: () =>
      new Promise((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

function fieldValues(head: string, name: string): string[] {
  return head
    .split("\r\n")
    .slice(1)
    .filter((line) => line.slice(0, line.indexOf(":")).toLowerCase() === name)
    .map((line) => line.slice(line.indexOf(":") + 1).trim());
}

function leafDer(creds: WorkloadCredentials): Buffer {
  const first = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.exec(creds.certChainPem);
  if (first === null) throw new Error("no certificate in the chain");
  return new X509Certificate(first[0]).raw;
}

const INGRESS_OPEN = `
apiVersion: sigil.dev/v1
kind: AuthorizationPolicy
metadata: { name: api }
spec:
  selector: { matchLabels: { app: api } }
  ingress:
    - action: allow
      from: [ { matchLabels: {} } ]
`;

let app: Awaited<ReturnType<typeof startSwitchingApp>>;
let pair: SidecarPair;
let caller: WorkloadCredentials;
const CALLER = "caller";

beforeAll(async () => {
  app = await startSwitchingApp();
  pair = await startPair({ appPorts: [app.port], policyB: INGRESS_OPEN });
  caller = await pair.pki.credentials(CALLER, { app: "caller" });
});

afterAll(async () => {
  await pair?.close();
  await app?.close();
});

/** A mesh connection to B's inbound for the app port, as a workload without its own sidecar. */
async function meshSocket(): Promise<TLSSocket> {
  const socket = tls.connect({
    host: "127.0.0.1",
    port: pair.b.sidecar.inbound.port,
    key: caller.privateKeyPem,
    cert: caller.certChainPem,
    ca: bundleRootsPem(pair.pki.ca.bundle()),
    ALPNProtocols: [`sigil/1;http1;${app.port}`],
    checkServerIdentity: () => undefined,
  });
  await once(socket, "secureConnect");
  return socket;
}

describe("an upgrade to HTTP again (h2c) never turns the connection into a tunnel", () => {
  it.each([
    ["h2c", "/switch/h2c"],
    ["websocket, H2C", "/switch/offered-with-another"],
    ["HTTP/2.0", "/switch/http-2.0"],
    ["TLS/1.0", "/switch/tls-1.0"],
  ])(
    "Upgrade: %s goes to the application as a plain request, the connection then closes, and nothing the caller writes after it reaches the application",
    async (offer, path) => {
      const socket = await meshSocket();
      socket.on("error", () => undefined);
      let data = "";
      socket.on("data", (c: Buffer) => (data += c.toString("latin1")));
      const closed = once(socket, "close");
      socket.write(
        `GET ${path} HTTP/1.1\r\nHost: api\r\nConnection: Upgrade, HTTP2-Settings\r\n` +
          `Upgrade: ${offer}\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n`,
      );
      // Written only once the answer is here: after a 101 these would be the new protocol's bytes,
      // which a proxy that spliced would pass on unread.
      await new Promise<void>((resolve) => {
        const answered = (): void => {
          if (!data.includes("\r\n\r\n")) return;
          socket.off("data", answered);
          resolve();
        };
        socket.on("data", answered);
      });
      if (!socket.destroyed)
        socket.write(
          `GET ${path}/next HTTP/1.1\r\nHost: api\r\n${XFCC}: URI=spiffe://sigil.local/workload/${FORGED}\r\n` +
            `Connection: close\r\n\r\n`,
        );
      await closed;
      expect(data).toMatch(/^HTTP\/1\.1 200 /);
      expect(data).not.toMatch(/ 101 /);
      const first = app.heads.find((h) => h.startsWith(`GET ${path} `)) as string;
      expect(fieldValues(first, "upgrade")).toEqual([]);
      expect(fieldValues(first, "http2-settings")).toEqual([]);
      expect(fieldValues(first, "connection")).toEqual([]);
      const hash = createHash("sha256").update(leafDer(caller)).digest("hex");
      expect(fieldValues(first, XFCC)).toEqual([
        `By=${pair.pki.spiffeId("api")};Hash=${hash};URI=${pair.pki.spiffeId(CALLER)}`,
      ]);
      expect(app.heads.some((h) => h.toLowerCase().includes(FORGED))).toBe(false);
    },
  );
});
