import { createHash } from "node:crypto";
import { once } from "node:events";
import http2 from "node:http2";
import type { IncomingHttpHeaders } from "node:http2";
import type { TLSSocket } from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { withForwardedClientCert } from "../../sidecar/http/client-cert.ts";
import type { TlsCredentials } from "../../sidecar/inputs/sources.ts";
import { fieldValues, leafDer, startH2Recorder, startHeadRecorder } from "../support/recording-apps.ts";
import type { H2Recorder, HeadRecorder } from "../support/recording-apps.ts";
import type { SidecarPair } from "../support/sidecar-mesh.ts";
import { startPair } from "../support/sidecar-mesh.ts";

/**
 * Attacks on the caller identity B gives its application (x-forwarded-client-cert) that go through
 * protocol switches: whatever a caller sends, every HTTP request the application receives on a
 * connection B parsed carries B's own field and no other.
 */

const XFCC = "x-forwarded-client-cert";
const FORGED = "forged";

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

let app: HeadRecorder;
let h2App: H2Recorder;
let pair: SidecarPair;
let caller: TlsCredentials;
const CALLER = "caller";

beforeAll(async () => {
  // An application that reads HTTP/1.1 again after switching: the worst case for a splice after a 101.
  app = await startHeadRecorder({ afterSwitch: "reading", upgradeTo: "h2c" });
  h2App = await startH2Recorder();
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

/** A mesh connection to B's inbound for an app port, as the caller without its own sidecar. */
function meshSocket(protocol: "http1" | "h2" = "http1", port = app.port): Promise<TLSSocket> {
  return pair.meshConnect(caller, protocol, port);
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
    const list = h2App.requests.find((r) => r.path === path)?.raw as string[];
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
