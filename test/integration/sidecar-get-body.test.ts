import http2 from "node:http2";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { App } from "../support/sidecar-apps.ts";
import { rawExchange, startH2App } from "../support/sidecar-apps.ts";
import type { SidecarPair } from "../support/sidecar-mesh.ts";
import { startPair } from "../support/sidecar-mesh.ts";
import type { RawRequest, RawUpstream } from "../support/raw-upstream.ts";
import { startRawUpstream } from "../support/raw-upstream.ts";

/**
 * The CL.0 class: a GET or HEAD with a body, forwarded framed, reaches an application that ignores
 * Content-Length on GET (many do: the method has no defined body), which then reads the body as a
 * second request that no sidecar decided. Raw client → A → mTLS → B → application that frames no
 * body at all. By default both sidecars refuse such a request with 400 (HTTP/1.1 and HTTP/2); a
 * workload whose application needs bodies on GET opts in with `bodiesOnGetHead: "forward"`.
 */

const POLICY = `
apiVersion: sigil.dev/v1
kind: AuthorizationPolicy
metadata: { name: api }
spec:
  selector: { matchLabels: { app: api } }
  ingress:
    - action: allow
      from: [ { matchLabels: { app: web } } ]
    - action: deny
      http: { paths: [ "/admin/**" ] }
`;

const H = "Host: api.test\r\n";
const SMUGGLED = `GET /admin/secret HTTP/1.1\r\n${H}\r\n`;

const answerOk = (req: RawRequest): void =>
  void req.socket.write("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");

let lenient: RawUpstream;
let h2App: App;
let pair: SidecarPair;
let optIn: SidecarPair;
let optInApp: RawUpstream;

beforeAll(async () => {
  lenient = await startRawUpstream(answerOk);
  optInApp = await startRawUpstream(answerOk);
  h2App = await startH2App();
  pair = await startPair({
    appPorts: [lenient.port, h2App.port],
    protocols: { [lenient.port]: "http1", [h2App.port]: "h2" },
    policyB: POLICY,
  });
  optIn = await startPair({
    appPorts: [optInApp.port],
    protocols: { [optInApp.port]: "http1" },
    policyB: POLICY,
    configA: { bodiesOnGetHead: "forward" },
    configB: { bodiesOnGetHead: "forward" },
  });
}, 30_000);

afterAll(async () => {
  await pair?.close();
  await optIn?.close();
  await lenient?.close();
  await optInApp?.close();
  await h2App?.close();
});

const SMUGGLING: Record<string, string> = {
  "GET with Content-Length": `GET /a HTTP/1.1\r\n${H}Content-Length: ${SMUGGLED.length}\r\n\r\n${SMUGGLED}`,
  "HEAD with Content-Length": `HEAD /a HTTP/1.1\r\n${H}Content-Length: ${SMUGGLED.length}\r\n\r\n${SMUGGLED}`,
  "GET with a chunked body": `GET /a HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n${SMUGGLED.length.toString(16)}\r\n${SMUGGLED}\r\n0\r\n\r\n`,
};

describe("HTTP/1.1: a GET or HEAD carrying a body", () => {
  it.each(Object.entries(SMUGGLING))(
    "%s is refused with 400 and never reaches the application",
    async (_n, probe) => {
      const linesBefore = lenient.lines.length;
      const flowsBefore = pair.a.flows.records.length;
      const { data } = await rawExchange(pair.outboundPort(lenient.port), probe);
      expect(data).toMatch(/^HTTP\/1\.1 400 /);
      expect(data).toContain("body");
      expect(lenient.lines.slice(linesBefore)).toEqual([]);
      const refused = pair.a.flows.records.slice(flowsBefore).find((r) => r.verdict === "deny");
      expect(refused?.reason).toMatch(/body/);
    },
  );

  it("a GET with Content-Length: 0 goes through", async () => {
    const linesBefore = lenient.lines.length;
    const { data } = await rawExchange(
      pair.outboundPort(lenient.port),
      `GET /a HTTP/1.1\r\n${H}Content-Length: 0\r\nConnection: close\r\n\r\n`,
    );
    expect(data).toMatch(/^HTTP\/1\.1 200 /);
    expect(lenient.lines.slice(linesBefore)).toEqual(["GET /a HTTP/1.1"]);
  });

  it("B refuses it too when a caller skips A and speaks straight to B's mesh listener", async () => {
    const linesBefore = lenient.lines.length;
    const socket = await pair.meshConnect(pair.a.credentials.current(), "http1", lenient.port);
    const chunks: Buffer[] = [];
    socket.on("data", (c: Buffer) => chunks.push(c));
    const closed = new Promise((resolve) => socket.once("close", resolve));
    socket.write(SMUGGLING["GET with Content-Length"] as string);
    await closed;
    expect(Buffer.concat(chunks).toString()).toMatch(/^HTTP\/1\.1 400 /);
    expect(lenient.lines.slice(linesBefore)).toEqual([]);
  });

  it("with bodiesOnGetHead: forward, the body is forwarded framed (the application's choice)", async () => {
    const { data } = await rawExchange(
      optIn.outboundPort(optInApp.port),
      `GET /a HTTP/1.1\r\n${H}Content-Length: 5\r\nConnection: close\r\n\r\nhello`,
    );
    expect(data).toMatch(/^HTTP\/1\.1 200 /);
    expect(optInApp.received()).toMatch(/content-length: 5\r\n/i);
    expect(optInApp.received()).toMatch(/\r\n\r\nhello/);
  });
});

async function h2Request(
  port: number,
  method: string,
  body: string | null,
  headers: http2.OutgoingHttpHeaders = {},
): Promise<number> {
  const client = http2.connect(`http://127.0.0.1:${port}`);
  client.on("error", () => undefined);
  try {
    const req = client.request(
      { ":method": method, ":path": "/a", ":authority": "api.test", ...headers },
      { endStream: body === null },
    );
    const status = new Promise<number>((resolve, reject) => {
      req.on("response", (h) => resolve(Number(h[":status"])));
      req.on("error", reject);
    });
    req.on("data", () => undefined);
    if (body !== null) req.end(body);
    return await status;
  } finally {
    client.close();
  }
}

describe("HTTP/2: a GET or HEAD carrying a body", () => {
  it("GET with DATA is refused with 400 and never reaches the application", async () => {
    const before = h2App.seen.length;
    expect(await h2Request(pair.outboundPort(h2App.port), "GET", "hidden")).toBe(400);
    expect(h2App.seen.slice(before)).toEqual([]);
  });

  it("HEAD declaring content-length is refused with 400", async () => {
    const before = h2App.seen.length;
    expect(await h2Request(pair.outboundPort(h2App.port), "HEAD", "x", { "content-length": "1" })).toBe(400);
    expect(h2App.seen.slice(before)).toEqual([]);
  });

  it("GET whose stream ends with an empty DATA frame goes through", async () => {
    const before = h2App.seen.length;
    expect(await h2Request(pair.outboundPort(h2App.port), "GET", "")).toBe(200);
    expect(h2App.seen.slice(before).map((s) => [s.method, s.body])).toEqual([["GET", ""]]);
  });
});
