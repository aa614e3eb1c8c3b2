import { X509Certificate, createHash } from "node:crypto";
import { once } from "node:events";
import http2 from "node:http2";
import type { IncomingHttpHeaders } from "node:http2";
import net from "node:net";
import type { AddressInfo, Socket } from "node:net";
import tls from "node:tls";
import type { TLSSocket } from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { bundleRootsPem } from "../../core/svid/bundle.ts";
import { withForwardedClientCert } from "../../sidecar/client-cert.ts";
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

/** HTTP/2 app: records each request's raw header list ([name, value, ...]) by path. */
async function startH2App(): Promise<{ port: number; raw: Map<string, string[]>; close(): Promise<void> }> {
  const raw = new Map<string, string[]>();
  const server = http2.createServer();
  // node passes the header list as it arrived after the flags; the typings stop at flags.
  const onStream = (
    stream: http2.ServerHttp2Stream,
    headers: IncomingHttpHeaders,
    _flags: number,
    list: string[],
  ): void => {
    raw.set(String(headers[":path"]), list);
    stream.respond({ ":status": 200 });
    stream.end("ok");
  };
  server.on("stream", onStream as (s: http2.ServerHttp2Stream, h: IncomingHttpHeaders, f: number) => void);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as AddressInfo).port,
    raw,
    close: () => new Promise((resolve) => server.close(() => resolve())),
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
let h2App: Awaited<ReturnType<typeof startH2App>>;
let pair: SidecarPair;
let caller: WorkloadCredentials;
const CALLER = "caller";

beforeAll(async () => {
  app = await startSwitchingApp();
  h2App = await startH2App();
  pair = await startPair({ appPorts: [app.port, h2App.port], policyB: INGRESS_OPEN });
  caller = await pair.pki.credentials(CALLER, { app: "caller" });
});

afterAll(async () => {
  await pair?.close();
  await app?.close();
  await h2App?.close();
});

/** What B sets for the test's caller. */
function expectedXfcc(): string {
  const hash = createHash("sha256").update(leafDer(caller)).digest("hex");
  return `By=${pair.pki.spiffeId("api")};Hash=${hash};URI=${pair.pki.spiffeId(CALLER)}`;
}

/** A mesh connection to B's inbound for an app port, as a workload without its own sidecar. */
async function meshSocket(protocol: "http1" | "h2" = "http1", port = app.port): Promise<TLSSocket> {
  const socket = tls.connect({
    host: "127.0.0.1",
    port: pair.b.sidecar.inbound.port,
    key: caller.privateKeyPem,
    cert: caller.certChainPem,
    ca: bundleRootsPem(pair.pki.ca.bundle()),
    ALPNProtocols: [`sigil/1;${protocol};${port}`],
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
      expect(fieldValues(first, XFCC)).toEqual([expectedXfcc()]);
      expect(app.heads.some((h) => h.toLowerCase().includes(FORGED))).toBe(false);
    },
  );
});

/** CGI-style readers (WSGI, Rack, Django) read both names as HTTP_X_FORWARDED_CLIENT_CERT. */
const UNDERSCORED = ["X_Forwarded_Client_Cert", "x-forwarded_client-cert"];

describe("XFCC spelled with underscores, which CGI-style applications read as the same field", () => {
  it("HTTP/1.1: removed, only B's own arrives", async () => {
    const path = "/underscore/h1";
    const socket = await meshSocket();
    socket.on("error", () => undefined);
    let data = "";
    socket.on("data", (c: Buffer) => (data += c.toString("latin1")));
    const closed = once(socket, "close");
    const forged = UNDERSCORED.map((n) => `${n}: URI=spiffe://sigil.local/workload/${FORGED}\r\n`).join("");
    socket.write(`GET ${path} HTTP/1.1\r\nHost: api\r\n${forged}Connection: close\r\n\r\n`);
    await closed;
    expect(data).toMatch(/^HTTP\/1\.1 200 /);
    const head = app.heads.find((h) => h.startsWith(`GET ${path} `)) as string;
    expect(head.toLowerCase()).not.toContain(FORGED);
    expect(fieldValues(head, XFCC)).toEqual([expectedXfcc()]);
  });

  it("HTTP/1.1 chunked trailers: refused", async () => {
    const socket = await meshSocket();
    socket.on("error", () => undefined);
    let data = "";
    socket.on("data", (c: Buffer) => (data += c.toString("latin1")));
    const closed = once(socket, "close");
    socket.write(
      `POST /underscore/trailer HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n` +
        `2\r\nhi\r\n0\r\nX_Forwarded_Client_Cert: URI=spiffe://sigil.local/workload/${FORGED}\r\n\r\n`,
    );
    await closed;
    expect(data).toMatch(/x_forwarded_client_cert in the trailer section/);
  });

  it("HTTP/2: removed, only B's own arrives", async () => {
    const path = "/underscore/h2";
    const socket = await meshSocket("h2", h2App.port);
    const session = http2.connect("http://api", { createConnection: () => socket });
    session.on("error", () => undefined);
    try {
      const status = await new Promise<number>((resolve, reject) => {
        const req = session.request(
          {
            ":path": path,
            x_forwarded_client_cert: `URI=spiffe://sigil.local/workload/${FORGED}`,
            "x-forwarded_client-cert": FORGED,
          },
          { endStream: true },
        );
        let got = 0;
        req.on("response", (h: IncomingHttpHeaders) => (got = Number(h[":status"])));
        req.on("error", reject);
        req.resume();
        req.on("close", () => resolve(got));
      });
      expect(status).toBe(200);
    } finally {
      session.close();
    }
    const list = h2App.raw.get(path) as string[];
    expect(list.join("\n").toLowerCase()).not.toContain(FORGED);
    const values = list.filter((_, i) => i % 2 === 1 && list[i - 1] === XFCC);
    expect(values).toEqual([expectedXfcc()]);
  });

  it("policy sees the fields as the application receives them", () => {
    const facts = withForwardedClientCert({ x_forwarded_client_cert: FORGED, accept: "*/*" }, "By=b");
    expect(facts).toEqual({ accept: "*/*", [XFCC]: "By=b" });
    expect(withForwardedClientCert({ "x-forwarded_client-cert": FORGED }, undefined)).toEqual({});
  });
});
