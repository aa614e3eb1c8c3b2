/**
 * The HTTP/2 relay at the enforcement point, fed frames no well-behaved client sends: each attack is
 * refused the way RFC 9113 says (the stream reset, or the connection ended with GOAWAY and its
 * code), the application never sees a request that was refused, and a connection whose stream was
 * refused still carries the next request.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ErrorCode, FrameType, frame, windowUpdateFrame } from "../../sidecar/http/http2/frames/frame.ts";
import { apiIngressPolicy } from "../support/api-ingress.ts";
import { RawH2Client } from "../support/raw-h2.ts";
import type { App } from "../support/sidecar-apps.ts";
import { startH2App } from "../support/sidecar-apps.ts";
import type { SidecarPair } from "../support/sidecar-mesh.ts";
import { policySet, startPair } from "../support/sidecar-mesh.ts";

const MAX_HEADER_BYTES = 8192;

let app: App;
let pair: SidecarPair;
const clients: RawH2Client[] = [];

async function client(): Promise<RawH2Client> {
  const c = await RawH2Client.connect(pair.outboundPort(app.port));
  clients.push(c);
  return c;
}

beforeAll(async () => {
  app = await startH2App();
  const relay = { http2Engine: "relay" as const, maxHeaderBytes: MAX_HEADER_BYTES };
  pair = await startPair({ appPorts: [app.port], configA: relay, configB: relay });
  pair.b.policy.update({ policies: policySet(apiIngressPolicy({ ports: [app.port] })) });
});

afterAll(async () => {
  for (const c of clients) c.close();
  await pair?.close();
  await app?.close();
});

/** The request still goes through on `c`: the refusal cost the attacker a stream, not the connection. */
async function stillServes(c: RawH2Client, streamId: number): Promise<void> {
  c.write(c.request(streamId, "/api/after"));
  const answer = await c.response(streamId);
  expect(answer.fields?.slice(0, 2)).toEqual([":status", "200"]);
}

describe("malformed requests: the stream is reset, the application never sees them", () => {
  const cases: [string, string[]][] = [
    ["an upper-case field name", ["X-Big", "1"]],
    ["a value with CR LF", ["x-smuggle", "a\r\nx-other: b"]],
    ["a value with NUL", ["x-nul", "a\0b"]],
    ["a value with leading whitespace", ["x-pad", " a"]],
    ["a connection-specific field", ["connection", "close"]],
    ["transfer-encoding", ["transfer-encoding", "chunked"]],
    ["te other than trailers", ["te", "gzip"]],
    ["a pseudo-header after a regular field", ["x-a", "1", ":path", "/api/x"]],
    ["a response pseudo-header", [":status", "200"]],
  ];
  it.each(cases)("%s", async (_, extra) => {
    const c = await client();
    const before = app.seen.length;
    c.write(c.request(1, "/api/malformed", extra));
    expect(await c.response(1)).toMatchObject({ type: FrameType.RST_STREAM, code: ErrorCode.PROTOCOL_ERROR });
    await stillServes(c, 3);
    expect(app.seen.slice(before).map((r) => r.url)).toEqual(["/api/after"]);
  });

  it("a request without :path, or with it twice", async () => {
    const c = await client();
    c.write(c.headers(1, [":method", "GET", ":scheme", "http", ":authority", "a"], 0x5));
    expect(await c.response(1)).toMatchObject({ type: FrameType.RST_STREAM, code: ErrorCode.PROTOCOL_ERROR });
    c.write(c.headers(3, [":method", "GET", ":scheme", "http", ":path", "/api/a", ":path", "/admin"], 0x5));
    expect(await c.response(3)).toMatchObject({ type: FrameType.RST_STREAM, code: ErrorCode.PROTOCOL_ERROR });
    await stillServes(c, 5);
  });

  it("DATA that contradicts the declared content-length", async () => {
    const c = await client();
    const before = app.seen.length;
    const post = [":method", "POST", ":scheme", "http", ":path", "/api/cl", "content-length", "3"];
    c.write(c.headers(1, post), frame(FrameType.DATA, 0x1, 1, Buffer.from("longer than three")));
    expect(await c.response(1)).toMatchObject({ type: FrameType.RST_STREAM, code: ErrorCode.PROTOCOL_ERROR });
    expect(app.seen.slice(before).some((r) => r.url === "/api/cl")).toBe(false);
  });
});

describe("header blocks: size limits and the HPACK bomb", () => {
  it("a header block itself larger than the limit ends the connection before it is held whole", async () => {
    const c = await client();
    c.write(c.request(1, "/api/big", ["x-big", "y".repeat(2 * MAX_HEADER_BYTES)]));
    expect(await c.goaway()).toMatchObject({ code: ErrorCode.ENHANCE_YOUR_CALM });
  });

  it("a small block of indexes into one large entry (the HPACK bomb) gets 431, not a huge request", async () => {
    const c = await client();
    const before = app.seen.length;
    // One 3 KB field enters the table; then a block of 40 one-octet references to it.
    c.write(c.request(1, "/api/seed", ["x-bomb", "b".repeat(3000)]));
    expect((await c.response(1)).fields?.slice(0, 2)).toEqual([":status", "200"]);
    const refs = Buffer.alloc(40, 0xbe);
    const head = Buffer.from(c.encoder.encode([":method", "GET", ":scheme", "http", ":path", "/api/bomb"]));
    c.write(frame(FrameType.HEADERS, 0x5, 3, Buffer.concat([head, refs])));
    expect((await c.response(3)).fields?.slice(0, 2)).toEqual([":status", "431"]);
    await stillServes(c, 5);
    expect(app.seen.slice(before).map((r) => r.url)).toEqual(["/api/seed", "/api/after"]);
  });

  it("a CONTINUATION flood ends the connection once the block outgrows the limit", async () => {
    const c = await client();
    const chunks = [c.headers(1, [":method", "GET"], 0)];
    for (let i = 0; i < 200; i++) chunks.push(frame(FrameType.CONTINUATION, 0, 1, Buffer.alloc(100, 0x82)));
    c.write(...chunks);
    expect(await c.goaway()).toMatchObject({ code: ErrorCode.ENHANCE_YOUR_CALM });
    await c.whenClosed();
  });

  it("a header block that is not valid HPACK ends the connection with COMPRESSION_ERROR", async () => {
    const c = await client();
    c.write(frame(FrameType.HEADERS, 0x5, 1, Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f])));
    expect(await c.goaway()).toMatchObject({ code: ErrorCode.COMPRESSION_ERROR });
  });
});

describe("floods and protocol faults that end the connection", () => {
  it("rapid reset: thousands of streams opened and reset at once get GOAWAY ENHANCE_YOUR_CALM", async () => {
    const c = await client();
    const chunks: Buffer[] = [];
    for (let id = 1; id < 2 * 3000; id += 2)
      chunks.push(
        c.request(id, "/api/reset", [], false),
        frame(FrameType.RST_STREAM, 0, id, Buffer.from([0, 0, 0, 8])),
      );
    c.write(...chunks);
    expect(await c.goaway()).toMatchObject({ code: ErrorCode.ENHANCE_YOUR_CALM });
  });

  it("empty DATA frames without end: GOAWAY ENHANCE_YOUR_CALM", async () => {
    const c = await client();
    const chunks = [c.request(1, "/api/empty", [], false)];
    for (let i = 0; i < 2000; i++) chunks.push(frame(FrameType.DATA, 0, 1));
    c.write(...chunks);
    expect(await c.goaway()).toMatchObject({ code: ErrorCode.ENHANCE_YOUR_CALM });
  });

  it("a window pushed past 2^31 - 1: GOAWAY FLOW_CONTROL_ERROR", async () => {
    const c = await client();
    c.write(windowUpdateFrame(0, 0x7fffffff));
    expect(await c.goaway()).toMatchObject({ code: ErrorCode.FLOW_CONTROL_ERROR });
  });

  it("a frame above the maximum size: GOAWAY FRAME_SIZE_ERROR", async () => {
    const c = await client();
    c.write(frame(FrameType.DATA, 0, 1, Buffer.alloc(16_385)));
    expect(await c.goaway()).toMatchObject({ code: ErrorCode.FRAME_SIZE_ERROR });
  });

  it("DATA on a stream never opened, and PUSH_PROMISE from a client: GOAWAY PROTOCOL_ERROR", async () => {
    const a = await client();
    a.write(frame(FrameType.DATA, 0, 7, Buffer.from("x")));
    expect(await a.goaway()).toMatchObject({ code: ErrorCode.PROTOCOL_ERROR });
    const b = await client();
    b.write(frame(FrameType.PUSH_PROMISE, 0x4, 1, Buffer.from([0, 0, 0, 2, 0x82])));
    expect(await b.goaway()).toMatchObject({ code: ErrorCode.PROTOCOL_ERROR });
  });

  it("PINGs from a peer that reads none of the answers: the connection is cut, its answers not held", async () => {
    const c = await client();
    c.stopReading();
    const pings = Buffer.concat(
      Array.from({ length: 1000 }, () => frame(FrameType.PING, 0, 0, Buffer.alloc(8))),
    );
    // 100,000 PINGs are 1.7 MB of answers, far below the bound; 4,000,000 are 68 MB, far above it.
    const writes = await c.writeUntilClosed(pings, 4000);
    expect(writes).toBeLessThan(4000);
    expect(writes).toBeGreaterThan(100);
  });

  it("bytes that are not frames after the preface: the length they read as is refused", async () => {
    const c = await client();
    // A second preface reads as a frame of 0x505249 octets.
    c.write(Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
    expect(await c.goaway()).toMatchObject({ code: ErrorCode.FRAME_SIZE_ERROR });
  });
});
