import net from "node:net";
import tls from "node:tls";
import { describe, expect, it } from "vitest";
import { decodeMeshAlpn, encodeMeshAlpn, selectMeshAlpn } from "../../sidecar/tls/alpn.ts";
import { parseClientHello } from "../../sidecar/tls/client-hello.ts";
import { classify, detectProtocol } from "../../sidecar/proxy/detect.ts";

/** Captures the first bytes a real TLS client sends (its ClientHello). */
async function realClientHello(options: tls.ConnectionOptions): Promise<Buffer> {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as net.AddressInfo).port;
  try {
    const first = new Promise<Buffer>((resolve) =>
      server.once("connection", (s) => s.once("data", (d: Buffer) => resolve(d))),
    );
    const client = tls.connect({ host: "127.0.0.1", port, rejectUnauthorized: false, ...options });
    client.on("error", () => undefined);
    const hello = await first;
    client.destroy();
    return hello;
  } finally {
    server.close();
  }
}

describe("mesh ALPN", () => {
  it("round-trips protocol and port", () => {
    expect(encodeMeshAlpn({ protocol: "h2", port: 50051 })).toBe("sigil/1;h2;50051");
    expect(decodeMeshAlpn("sigil/1;tcp;5432")).toEqual({ protocol: "tcp", port: 5432 });
  });

  it.each([
    "sigil/1;h2;0",
    "sigil/1;h2;65536",
    "sigil/1;h2;080",
    "sigil/1;ftp;21",
    "sigil/2;h2;80",
    "h2",
    "sigil/1;h2;80;x",
    "sigil/1;h2; 80",
  ])("rejects %s", (value) => expect(decodeMeshAlpn(value)).toBeNull());

  it("selects only a well-formed mesh protocol", () => {
    expect(selectMeshAlpn(["h2", "http/1.1"])).toBeUndefined();
    expect(selectMeshAlpn(["h2", "sigil/1;http1;8080"])).toBe("sigil/1;http1;8080");
  });

  it("refuses to encode a port outside 1-65535", () => {
    expect(() => encodeMeshAlpn({ protocol: "tcp", port: 0 })).toThrow(RangeError);
  });
});

describe("ClientHello parsing", () => {
  it("reads SNI and ALPN from a real hello", async () => {
    const hello = await realClientHello({
      servername: "api.partner.test",
      ALPNProtocols: ["sigil/1;h2;443", "h2"],
    });
    const parsed = parseClientHello(hello);
    expect(parsed).toEqual({
      state: "complete",
      hello: { serverName: "api.partner.test", alpn: ["sigil/1;h2;443", "h2"] },
    });
  });

  it("asks for more bytes on a truncated record and refuses garbage", async () => {
    const hello = await realClientHello({ servername: "x.test" });
    expect(parseClientHello(hello.subarray(0, 20))).toEqual({ state: "incomplete" });
    expect(parseClientHello(Buffer.from([0x16, 0x03, 0x01, 0x00, 0x05, 0x02, 0, 0, 0, 0]))).toEqual({
      state: "invalid",
    });
    expect(parseClientHello(Buffer.from("GET / HTTP/1.1\r\n"))).toEqual({ state: "invalid" });
  });

  it("survives corrupted extension lengths without throwing", async () => {
    const hello = Buffer.from(await realClientHello({ servername: "x.test", ALPNProtocols: ["h2"] }));
    for (let i = 43; i < hello.length; i += 7) {
      const copy = Buffer.from(hello);
      copy[i] = 0xff;
      expect(() => parseClientHello(copy)).not.toThrow();
    }
  });
});

describe("protocol classification", () => {
  it.each([
    ["GET / HTTP/1.1\r\n", "http1"],
    ["POST /a?b=c HTTP/1.0\r\n", "http1"],
    ["PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "h2"],
    ["SSH-2.0-OpenSSH_9.6\r\n", "tcp"],
    ["\x00\x01\x02", "tcp"],
    ["GET / HTTP/3.0\r\n", "tcp"],
  ])("%j is %s", (input, kind) => {
    const verdict = classify(Buffer.from(input, "latin1"));
    expect(verdict === "more" ? "more" : verdict.kind).toBe(kind);
  });

  it.each([
    "GE",
    "GET /api",
    "GET /api HTTP/1.",
    "GET /api HTTP/1.1\r",
    "GET /api ",
    "PRI * HTTP/2",
    "\x16\x03\x01",
  ])("%j needs more bytes", (input) => {
    expect(classify(Buffer.from(input, "latin1"))).toBe("more");
  });

  it("gives up after the timeout when the client stays silent (server speaks first)", async () => {
    const server = net.createServer({ pauseOnConnect: true });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const port = (server.address() as net.AddressInfo).port;
    const accepted = new Promise<net.Socket>((resolve) => server.once("connection", resolve));
    const client = net.connect(port, "127.0.0.1");
    try {
      const detection = await detectProtocol(await accepted, 50);
      expect(detection.protocol).toEqual({ kind: "tcp", reason: "timeout" });
      expect(detection.head.length).toBe(0);
    } finally {
      client.destroy();
      server.close();
    }
  });

  it("keeps every byte read during detection", async () => {
    const server = net.createServer({ pauseOnConnect: true });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const port = (server.address() as net.AddressInfo).port;
    const accepted = new Promise<net.Socket>((resolve) => server.once("connection", resolve));
    const client = net.connect(port, "127.0.0.1", () => client.write("GET /x HTTP/1.1\r\nHost: a\r\n\r\n"));
    try {
      const detection = await detectProtocol(await accepted, 1000);
      expect(detection.protocol.kind).toBe("http1");
      expect(detection.head.toString()).toMatch(/^GET \/x HTTP\/1\.1\r\n/);
    } finally {
      client.destroy();
      server.close();
    }
  });
});
