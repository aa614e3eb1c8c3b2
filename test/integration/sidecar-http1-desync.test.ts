import net from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startRawUpstream } from "../support/raw-upstream.ts";
import type { RawUpstream } from "../support/raw-upstream.ts";
import { rawExchange } from "../support/sidecar-apps.ts";
import type { SidecarPair } from "../support/sidecar-mesh.ts";
import { startPair } from "../support/sidecar-mesh.ts";

/**
 * Desynchronization between the sidecar and the server behind it, end to end through A's egress to
 * a scripted raw HTTP server (raw, so that it answers what it is scripted to, switches protocols or
 * not, and reads every request line it is sent the way a lenient server would). A's policy allows
 * the server and denies /admin/**: the server must never be sent /admin, and every response the
 * client reads must be the one the sidecar framed.
 */

/** What the scripted server answers, by request path; anything else gets 200 and the path. */
const SCRIPT: Record<string, string> = {
  "/resp-conn": "HTTP/1.1 200 OK\r\nConnection: Content-Length\r\nContent-Length: 10\r\n\r\n/resp-conn",
  "/resp-ext": 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;a="\r\nok\r\n0\r\n\r\n',
  "/resp-trailer":
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nContent-Length: 50\r\n\r\n",
  "/resp-nbsp": "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\xa0\r\n\r\n2\r\nok\r\n0\r\n\r\n",
  "/ws-refuse": "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n/ws-refuse",
  "/ws-switch": "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
};

/** Answers from SCRIPT; after `/ws-switch` the connection echoes every byte as frames. */
function startScriptedServer(): Promise<RawUpstream> {
  return startRawUpstream(({ path, socket }) => {
    const answer = SCRIPT[path] ?? `HTTP/1.1 200 OK\r\nContent-Length: ${path.length}\r\n\r\n${path}`;
    socket.write(Buffer.from(answer, "latin1"));
    return path === "/ws-switch" ? "echo" : undefined;
  });
}

let upstream: RawUpstream;
let pair: SidecarPair;

beforeAll(async () => {
  upstream = await startScriptedServer();
  pair = await startPair({
    appPorts: [],
    externalTargets: [{ host: "127.0.0.1", port: upstream.port }],
    policyA: `
apiVersion: sigil.dev/v1
kind: AuthorizationPolicy
metadata: { name: web-egress }
spec:
  selector: { matchLabels: { app: web } }
  egress:
    - action: allow
      to: [ { dnsNames: [ "localhost" ] } ]
    - action: deny
      http: { paths: [ "/admin/**" ] }
    - action: deny
      http: { paths: [ "/tenant" ], headers: [ { name: x-tenant, present: false } ] }
`,
  });
});

afterAll(async () => {
  await pair?.close();
  await upstream?.close();
});

const H = "Host: localhost\r\n";
const ADMIN = `GET /admin/secret HTTP/1.1\r\n${H}\r\n`;

/** Sends `probe` on one connection and returns what the client read until the sidecar closed. */
async function probe(input: string): Promise<{ client: string; lines: string[]; received: string }> {
  const linesBefore = upstream.lines.length;
  const receivedBefore = upstream.received().length;
  const { data } = await rawExchange(pair.externalPort(0), Buffer.from(input, "latin1"), 3000);
  return {
    client: data,
    lines: upstream.lines.slice(linesBefore),
    received: upstream.received().slice(receivedBefore),
  };
}

function statuses(client: string): number[] {
  return [...client.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => Number(m[1]));
}

describe("a Connection field naming a framing or routing field is refused", () => {
  it.each([
    [
      "Content-Length",
      `POST /a HTTP/1.1\r\n${H}Connection: Content-Length\r\nContent-Length: ${ADMIN.length}\r\n\r\n${ADMIN}`,
    ],
    [
      "content-length among other options",
      `POST /a HTTP/1.1\r\n${H}Connection: keep-alive, content-length\r\nContent-Length: ${ADMIN.length}\r\n\r\n${ADMIN}`,
    ],
    [
      "Transfer-Encoding",
      `POST /a HTTP/1.1\r\n${H}Connection: Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n\r\n${ADMIN.length.toString(16)}\r\n${ADMIN}\r\n0\r\n\r\n`,
    ],
    ["Host", `GET /a HTTP/1.1\r\n${H}Connection: Host\r\n\r\n`],
  ])("%s: 400, nothing forwarded", async (_name, input) => {
    const r = await probe(input);
    expect(statuses(r.client)).toEqual([400]);
    expect(r.lines).toEqual([]);
  });

  it("policy decides on the fields forwarded: one named in Connection cannot meet a rule", async () => {
    const allowed = await probe(`GET /tenant HTTP/1.1\r\n${H}X-Tenant: acme\r\nConnection: close\r\n\r\n`);
    expect(statuses(allowed.client)).toEqual([200]);
    const r = await probe(
      `GET /tenant HTTP/1.1\r\n${H}X-Tenant: acme\r\nConnection: close, X-Tenant\r\n\r\n`,
    );
    expect(statuses(r.client)).toEqual([403]);
    expect(r.lines).toEqual([]);
  });

  it("a response whose Connection names Content-Length is a 502, never relayed without its length", async () => {
    const r = await probe(`GET /resp-conn HTTP/1.1\r\n${H}\r\nGET /second HTTP/1.1\r\n${H}\r\n`);
    expect(statuses(r.client)).toEqual([502]);
    expect(r.client).not.toContain("/resp-conn");
  });
});

const UPGRADE = "Connection: Upgrade\r\nUpgrade: websocket\r\n";

/** The flow A recorded for the request to `path`. */
function flowOf(path: string): { status: number } | undefined {
  const r = pair.a.flows.records.findLast((f) => f.http?.path === path);
  return r?.http as { status: number } | undefined;
}

describe("an upgrade becomes a tunnel only once the server switched protocols", () => {
  it("a declined upgrade is relayed as a response and the bytes after the request are never sent", async () => {
    const r = await probe(`GET /ws-refuse HTTP/1.1\r\n${H}${UPGRADE}\r\n${ADMIN}`);
    expect(statuses(r.client)).toEqual([200]);
    expect(r.client).toContain("/ws-refuse");
    expect(r.lines).toEqual(["GET /ws-refuse HTTP/1.1"]);
    expect(r.received).not.toContain("/admin");
    expect(flowOf("/ws-refuse")?.status).toBe(200);
  });

  it("an h2c upgrade with a body: the body goes, the bytes after it do not", async () => {
    const r = await probe(
      `POST /ws-refuse HTTP/1.1\r\n${H}Connection: Upgrade\r\nUpgrade: h2c\r\nContent-Length: 3\r\n\r\nabc${ADMIN}`,
    );
    expect(statuses(r.client)).toEqual([200]);
    expect(r.received).toContain("\r\n\r\nabc");
    expect(r.received).not.toContain("/admin");
  });

  it("bytes sent before the 101 are refused, never forwarded", async () => {
    const r = await probe(`GET /ws-switch HTTP/1.1\r\n${H}${UPGRADE}\r\n${ADMIN}`);
    expect(statuses(r.client)).toEqual([400]);
    expect(r.received).not.toContain("/admin");
  });

  it("after a 101 the connection carries bytes both ways", async () => {
    const c = net.connect(pair.externalPort(0), "127.0.0.1");
    c.on("error", () => undefined);
    let got = "";
    const seen = (text: string): Promise<void> =>
      new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no "${text}" in ${JSON.stringify(got)}`)), 3000);
        const check = (): void => {
          if (!got.includes(text)) return;
          clearTimeout(timer);
          c.off("data", check);
          resolve();
        };
        c.on("data", check);
        check();
      });
    c.on("data", (d: Buffer) => (got += d.toString("latin1")));
    c.write(`GET /ws-switch HTTP/1.1\r\n${H}${UPGRADE}\r\n`);
    await seen("\r\n\r\n");
    expect(statuses(got)).toEqual([101]);
    c.write("frame-one");
    await seen("frame-one");
    const closed = new Promise((resolve) => c.once("close", resolve));
    c.end();
    await closed;
    await expect.poll(() => flowOf("/ws-switch")?.status).toBe(101);
  });
});

describe("chunk extensions, trailers and field values are read as the next hop reads them", () => {
  const chunkedPost = (body: string): string =>
    `POST /a HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n${body}${ADMIN}`;
  it.each([
    ["a chunk extension with an unclosed quote", chunkedPost('5;a="\r\nhello\r\n0\r\n\r\n')],
    ["a chunk extension without a name", chunkedPost("5;\r\nhello\r\n0\r\n\r\n")],
    ["a chunk extension value with a space", chunkedPost("5;a=b c\r\nhello\r\n0\r\n\r\n")],
    ["Content-Length in the trailers", chunkedPost("0\r\nContent-Length: 50\r\n\r\n")],
    ["Host in the trailers", chunkedPost("0\r\nHost: other.test\r\n\r\n")],
    [
      "Transfer-Encoding: chunked and NBSP",
      `POST /a HTTP/1.1\r\n${H}Transfer-Encoding: chunked\xa0\r\n\r\n0\r\n\r\n${ADMIN}`,
    ],
    ["Content-Length and NBSP", `POST /a HTTP/1.1\r\n${H}Content-Length: 0\xa0\r\n\r\n${ADMIN}`],
  ])("request with %s: the request is refused and /admin never sent", async (_name, input) => {
    const r = await probe(input);
    expect(statuses(r.client)[0]).toBe(400);
    expect(r.received).not.toContain("/admin");
  });

  it.each([
    ["a chunk extension with an unclosed quote", "/resp-ext"],
    ["Content-Length in the trailers", "/resp-trailer"],
    ["Transfer-Encoding: chunked and NBSP", "/resp-nbsp"],
  ])("response with %s: never relayed as framed here", async (_name, path) => {
    const r = await probe(`GET ${path} HTTP/1.1\r\n${H}\r\nGET /second HTTP/1.1\r\n${H}\r\n`);
    expect(statuses(r.client)).not.toContain(200);
    expect(r.client).not.toContain("Content-Length: 50");
    expect(r.lines).toEqual([`GET ${path} HTTP/1.1`]);
  });
});
