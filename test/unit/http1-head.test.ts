import { describe, expect, it } from "vitest";
import { KEEP_ALIVE_MARGIN_MS, keepAliveIdleMs } from "../../sidecar/http/http1/keep-alive-hint.ts";
import {
  HeadError,
  headEnd,
  parseRequestHead,
  parseResponseHead,
  partialHeadProblem,
} from "../../sidecar/http/http1/head.ts";

const request = (text: string) => parseRequestHead(text);

function refusal(text: string): string {
  try {
    parseRequestHead(text);
  } catch (err) {
    expect(err).toBeInstanceOf(HeadError);
    return (err as HeadError).reason;
  }
  throw new Error("accepted");
}

describe("request heads", () => {
  it("reads the request line, fields in order and the framing fields", () => {
    const head = request(
      "POST /api/x?y=1 HTTP/1.1\r\nHost: api.local\r\nX-Tenant: acme\r\nContent-Length: 5\r\nx-tenant: other\r\n\r\n",
    );
    expect(head).toMatchObject({
      method: "POST",
      target: "/api/x?y=1",
      minor: 1,
      host: "api.local",
      contentLength: 5,
      chunked: false,
      keepAlive: true,
      upgrade: false,
    });
    expect(head.raw).toEqual([
      "Host",
      "api.local",
      "X-Tenant",
      "acme",
      "Content-Length",
      "5",
      "x-tenant",
      "other",
    ]);
    expect(head.byName["x-tenant"]).toBe("acme, other");
  });

  it("trims optional whitespace around values and reads transfer codings case-insensitively", () => {
    const head = request("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \tChunked \r\n\r\n");
    expect(head.chunked).toBe(true);
    expect(head.contentLength).toBeNull();
  });

  it("knows upgrades, 100-continue and connection close", () => {
    const up = request(
      "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n",
    );
    expect(up.upgrade).toBe(true);
    expect(request("GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n").upgrade).toBe(false);
    expect(
      request("PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n")
        .expectContinue,
    ).toBe(true);
    expect(request("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").keepAlive).toBe(false);
    expect(request("GET / HTTP/1.0\r\n\r\n")).toMatchObject({ minor: 0, keepAlive: false });
    expect(request("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keepAlive).toBe(true);
  });

  it("keeps absolute-form and asterisk-form targets for the path normalizer", () => {
    expect(request("GET http://api/x HTTP/1.1\r\nHost: api\r\n\r\n").target).toBe("http://api/x");
    expect(request("OPTIONS * HTTP/1.1\r\nHost: api\r\n\r\n").target).toBe("*");
    // Authority-form is only for CONNECT, which the proxy refuses; the path normalizer refuses the rest.
    expect(request("CONNECT api:443 HTTP/1.1\r\nHost: api\r\n\r\n").method).toBe("CONNECT");
  });

  const smuggling: [string, string, RegExp][] = [
    ["CL.TE", "Content-Length: 6\r\nTransfer-Encoding: chunked", /both Content-Length and Transfer-Encoding/],
    ["TE.CL", "Transfer-Encoding: chunked\r\nContent-Length: 6", /both Content-Length and Transfer-Encoding/],
    ["duplicate Content-Length", "Content-Length: 5\r\nContent-Length: 5", /more than one Content-Length/],
    ["a Content-Length list", "Content-Length: 5, 5", /invalid Content-Length/],
    ["a signed Content-Length", "Content-Length: +5", /invalid Content-Length/],
    ["a negative Content-Length", "Content-Length: -1", /invalid Content-Length/],
    ["a hexadecimal Content-Length", "Content-Length: 0x10", /invalid Content-Length/],
    ["an overflowing Content-Length", "Content-Length: 99999999999999999999", /invalid Content-Length/],
    ["chunked then identity", "Transfer-Encoding: chunked, identity", /unsupported Transfer-Encoding/],
    ["identity then chunked", "Transfer-Encoding: identity, chunked", /unsupported Transfer-Encoding/],
    [
      "a repeated Transfer-Encoding",
      "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
      /more than one/,
    ],
    ["a coding that only contains chunked", "Transfer-Encoding: xchunked", /unsupported Transfer-Encoding/],
    ["a quoted coding", 'Transfer-Encoding: "chunked"', /unsupported Transfer-Encoding/],
    ["a vertical tab before the coding", "Transfer-Encoding:\x0bchunked", /control character/],
    ["a space before the colon", "Transfer-Encoding : chunked", /invalid header field name/],
    ["obs-fold", "X-A: b\r\n chunked", /obsolete line folding/],
    ["two Host fields", "Host: b", /more than one Host/],
    ["a NUL in a value", "X-A: a\x00b", /control character/],
    ["a bare CR in a value (header injection)", "X-A: a\rX-B: c", /line ending other than CRLF/],
    ["a bare LF in a value (header injection)", "X-A: a\nX-B: c", /line ending other than CRLF/],
    ["DEL in a value", "X-A: a\x7fb", /control character/],
    ["a field name with a slash", "X/A: b", /invalid header field name/],
    ["a line without a colon", "Just-a-name", /without a field name/],
  ];

  it.each(smuggling)("refuses %s", (_name, fields, reason) => {
    expect(refusal(`POST /x HTTP/1.1\r\nHost: a\r\n${fields}\r\n\r\n`)).toMatch(reason);
  });

  const lines: [string, string][] = [
    ["a lower-case method", "get / HTTP/1.1"],
    ["a method with a slash", "GE/T / HTTP/1.1"],
    ["two spaces", "GET  / HTTP/1.1"],
    ["a tab separator", "GET\t/ HTTP/1.1"],
    ["HTTP/2.0", "GET / HTTP/2.0"],
    ["HTTP/1.2", "GET / HTTP/1.2"],
    ["a lower-case version", "GET / http/1.1"],
    ["a missing version", "GET /"],
    ["a non-ASCII target", "GET /caf\u00e9 HTTP/1.1"],
    ["a trailing space", "GET / HTTP/1.1 "],
  ];

  it.each(lines)("refuses a request line with %s", (_name, line) => {
    expect(refusal(`${line}\r\nHost: a\r\n\r\n`)).toMatch(/malformed request line|control character/);
  });

  it("refuses an HTTP/1.1 request without Host and a chunked HTTP/1.0 request", () => {
    expect(refusal("GET / HTTP/1.1\r\nX: y\r\n\r\n")).toMatch(/without a Host/);
    expect(refusal("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n")).toMatch(/HTTP\/1\.0/);
  });

  it("refuses a head cut by a lone LF even before it is complete", () => {
    expect(partialHeadProblem("GET / HTTP/1.1\nHost: a\n")).toMatch(/line ending/);
    expect(partialHeadProblem("GET / HTTP/1.1\r\nX: \x00")).toMatch(/control character/);
    expect(partialHeadProblem("GET / HTTP/1.1\r\nHost: a\r")).toBeNull();
    expect(partialHeadProblem("GET / HTTP/1.1\r\nHost: a\r\n")).toBeNull();
  });

  it("finds the end of a head across a resumed search", () => {
    const buf = Buffer.from("GET / HTTP/1.1\r\nHost: a\r\n\r\nBODY");
    expect(headEnd(buf, 0)).toBe(buf.length - 4);
    // The proxy resumes three bytes before the end of what it had: "…\r\n\r" + "\n".
    expect(headEnd(buf, 23)).toBe(buf.length - 4);
    expect(headEnd(Buffer.from("GET / HTTP/1.1\r\nHost: a\r\n"), 0)).toBe(-1);
  });
});

describe("response heads", () => {
  it("reads status, reason, framing and reuse", () => {
    expect(
      parseResponseHead("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n"),
    ).toMatchObject({
      status: 200,
      reason: "OK",
      contentLength: 3,
      keepAlive: true,
      byName: { "set-cookie": ["a=1", "b=2"] },
    });
    expect(parseResponseHead("HTTP/1.1 204\r\n\r\n")).toMatchObject({ status: 204, reason: "" });
    expect(parseResponseHead("HTTP/1.0 200 OK\r\n\r\n").keepAlive).toBe(false);
    expect(parseResponseHead("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n").keepAlive).toBe(false);
  });

  it.each([
    ["a two-digit status", "HTTP/1.1 20 OK\r\n\r\n"],
    ["a status above 999", "HTTP/1.1 2000 OK\r\n\r\n"],
    ["HTTP/2", "HTTP/2 200 OK\r\n\r\n"],
    ["both framings", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"],
    ["a NUL in a field", "HTTP/1.1 200 OK\r\nX: \x00\r\n\r\n"],
  ])("refuses %s", (_name, text) => {
    expect(() => parseResponseHead(text)).toThrow(HeadError);
  });
});

describe("Keep-Alive: timeout hint of a response", () => {
  it("leaves the advertised idle time less the margin, none below it, and null without a timeout", () => {
    expect(keepAliveIdleMs(["Keep-Alive", "timeout=5"])).toBe(5000 - KEEP_ALIVE_MARGIN_MS);
    expect(keepAliveIdleMs(["keep-alive", "max=100, timeout=3"])).toBe(3000 - KEEP_ALIVE_MARGIN_MS);
    expect(keepAliveIdleMs(["Keep-Alive", "timeout=1"])).toBe(0);
    expect(keepAliveIdleMs(["Keep-Alive", "timeout=0"])).toBe(0);
    expect(keepAliveIdleMs(["Keep-Alive", "max=100"])).toBeNull();
    expect(keepAliveIdleMs(["Keep-Alive", "mytimeout=5"])).toBeNull();
    expect(keepAliveIdleMs(["Content-Type", "text/plain"])).toBeNull();
  });
});
