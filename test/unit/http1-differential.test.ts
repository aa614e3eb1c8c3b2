import http from "node:http";
import net from "node:net";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BodyFramer, FramingError } from "../../sidecar/http/http1/body.ts";
import { HeadError, headEnd, parseResponseHead } from "../../sidecar/http/http1/head.ts";
import { LlhttpServer, MAX_HEAD, comparable, sigilRequests, trailersOf } from "../support/http1-readings.ts";

/**
 * Sigil's HTTP/1.1 framing read side by side with llhttp, the parser of the node:http servers and
 * clients behind and in front of the sidecar (default strict mode, on loopback). The same bytes go
 * to both; what each accepts, and for accepted messages the method, target, version, header list,
 * framing, decoded body, trailers and where each message ends (the requests read after it), must
 * agree. Where Sigil refuses what llhttp accepts, the table says so and the test holds Sigil to
 * refusing before that message; Sigil accepting what llhttp refuses, or both accepting with another
 * reading, is a smuggling or policy-bypass risk and fails here.
 */

const H = "Host: a.test\r\n";
/** A request after the probe: where llhttp and Sigil find it shows where the probe ended. */
const NEXT = "GET /next HTTP/1.1\r\nHost: a.test\r\n\r\n";
const post = (fields: string, body: string): string => `POST /x HTTP/1.1\r\n${H}${fields}\r\n${body}${NEXT}`;
const chunked = (body: string): string => post("Transfer-Encoding: chunked\r\n", body);
const get = (fields: string): string => `GET /x HTTP/1.1\r\n${H}${fields}\r\n${NEXT}`;

function paddedHead(total: number): string {
  const start = `GET /x HTTP/1.1\r\n${H}X-Pad: `;
  return `${start}${"a".repeat(total - start.length - 4)}\r\n\r\n`;
}

/** Inputs on which both parsers must read exactly the same (accepted or refused alike). */
const AGREE: Record<string, string> = {
  "GET then another": get(""),
  "Content-Length body": post("Content-Length: 5\r\n", "hello"),
  "Content-Length with leading zeros": post("Content-Length: 0005\r\n", "hello"),
  "Content-Length of 15 digits": post("Content-Length: 000000000000005\r\n", "hello"),
  "Content-Length on a GET": `GET /x HTTP/1.1\r\n${H}Content-Length: 5\r\n\r\nhello${NEXT}`,
  "chunked with an extension and trailers": chunked(
    "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Sum: 11\r\n\r\n",
  ),
  "chunked with a quoted extension": chunked('5;a="b;c"\r\nhello\r\n0\r\n\r\n'),
  "chunk size with leading zeros": chunked("0005\r\nhello\r\n0\r\n\r\n"),
  "chunk size in upper-case hex": chunked("A\r\n0123456789\r\n0\r\n\r\n"),
  "Transfer-Encoding with extra spaces": post("Transfer-Encoding:  chunked \r\n", "0\r\n\r\n"),
  "Transfer-Encoding after a tab": post("Transfer-Encoding:\tchunked\r\n", "0\r\n\r\n"),
  "Transfer-Encoding in mixed case": post("tRANSFER-eNCODING: ChUnKeD\r\n", "0\r\n\r\n"),
  // Smuggling classics, all refused by both.
  "CL.TE": post("Content-Length: 6\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\nG"),
  "TE.CL": post("Transfer-Encoding: chunked\r\nContent-Length: 3\r\n", "8\r\nSMUGGLED\r\n0\r\n\r\n"),
  "Transfer-Encoding: xchunked": post("Transfer-Encoding: xchunked\r\n", "0\r\n\r\n"),
  "Transfer-Encoding: chunked, identity": post("Transfer-Encoding: chunked, identity\r\n", "0\r\n\r\n"),
  "Transfer-Encoding with a space before the colon": post("Transfer-Encoding : chunked\r\n", "0\r\n\r\n"),
  "Transfer-Encoding twice": post(
    "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
    "0\r\n\r\n",
  ),
  "Transfer-Encoding chunked then identity": post(
    "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
    "0\r\n\r\n",
  ),
  "Transfer-Encoding after a vertical tab": post("Transfer-Encoding: \x0bchunked\r\n", "0\r\n\r\n"),
  "Content-Length: +5": post("Content-Length: +5\r\n", "hello"),
  "Content-Length: 0x5": post("Content-Length: 0x5\r\n", "hello"),
  "Content-Length: 5, 5": post("Content-Length: 5, 5\r\n", "hello"),
  "Content-Length twice, equal": post("Content-Length: 5\r\nContent-Length: 5\r\n", "hello"),
  "Content-Length twice, different": post("Content-Length: 5\r\nContent-Length: 6\r\n", "hello!"),
  "Content-Length above 2^53": post("Content-Length: 99999999999999999999\r\n", "hello"),
  "Content-Length negative": post("Content-Length: -5\r\n", "hello"),
  "Content-Length empty": post("Content-Length: \r\n", "hello"),
  "Content-Length with an inner space": post("Content-Length: 1 5\r\n", "hello"),
  "chunk size with junk": chunked("5g\r\nhello\r\n0\r\n\r\n"),
  "chunk size overflowing 64 bits": chunked("10000000000000005\r\nhello\r\n0\r\n\r\n"),
  "chunk size 0x5": chunked("0x5\r\nhello\r\n0\r\n\r\n"),
  "chunk size after a space": chunked(" 5\r\nhello\r\n0\r\n\r\n"),
  "chunk size before a space": chunked("5 \r\nhello\r\n0\r\n\r\n"),
  "chunk extension after whitespace": chunked("5 ;a=b\r\nhello\r\n0\r\n\r\n"),
  "chunk extension holding a bare LF": chunked("5;a\nb\r\nhello\r\n0\r\n\r\n"),
  "chunk extension quoting a CRLF and a fake body end": chunked('5;a="x\r\n0\r\n\r\n"\r\nhello\r\n0\r\n\r\n'),
  "chunk size line ended by LF": chunked("5\nhello\r\n0\r\n\r\n"),
  "chunk data ended by LF": chunked("5\r\nhello\n0\r\n\r\n"),
  "chunk data longer than its size": chunked("3\r\nhello\r\n0\r\n\r\n"),
  "last chunk ended by LFs": chunked("0\n\n"),
  "trailer folded": chunked("0\r\nX-A: 1\r\n b\r\n\r\n"),
  "trailer name with a space": chunked("0\r\nX A: 1\r\n\r\n"),
  "trailer with a NUL": chunked("0\r\nX-A: \x00\r\n\r\n"),
  "trailer without a colon": chunked("0\r\nX-A\r\n\r\n"),
  "head with LF line endings": `GET /x HTTP/1.1\nHost: a.test\n\n${NEXT}`,
  "one header line ended by LF": get("Host2: a\nX: y\r\n"),
  "bare CR in a value": get("X-A: a\rb\r\n"),
  "NUL in a value": get("X-A: a\x00b\r\n"),
  "DEL in a value": get("X-A: a\x7fb\r\n"),
  "obs-text in a value": get("X-A: caf\xe9\r\n"),
  "value between tabs and spaces": get("X-A:\t b \t\r\n"),
  "obs-fold": get("X-A: a\r\n b\r\n"),
  "obs-fold as the first field": `GET /x HTTP/1.1\r\n Host: a.test\r\n\r\n${NEXT}`,
  "header name with a space": get("X A: b\r\n"),
  "header name with a parenthesis": get("X(A): b\r\n"),
  "empty header name": get(": b\r\n"),
  "header line without a colon": get("XA\r\n"),
  "header name with obs-text": get("X\xe9: b\r\n"),
  "tab in the request line": `GET\t/x HTTP/1.1\r\n${H}\r\n${NEXT}`,
  "request line with a trailing space": `GET /x HTTP/1.1 \r\n${H}\r\n${NEXT}`,
  "lower-case method": `get /x HTTP/1.1\r\n${H}\r\n${NEXT}`,
  "absolute-form target": `GET http://a.test/x HTTP/1.1\r\n${H}\r\n${NEXT}`,
  "absolute-form naming another host": `GET http://b.test/admin HTTP/1.1\r\n${H}\r\n${NEXT}`,
  "target without a leading slash": `GET a.test/x?q=1 HTTP/1.1\r\n${H}\r\n${NEXT}`,
  "target with a scheme but no //": `GET http:/x HTTP/1.1\r\n${H}\r\n${NEXT}`,
  "asterisk-form OPTIONS": `OPTIONS * HTTP/1.1\r\n${H}\r\n${NEXT}`,
  "asterisk-form GET": `GET * HTTP/1.1\r\n${H}\r\n${NEXT}`,
  "target with a fragment": `GET /x#frag HTTP/1.1\r\n${H}\r\n${NEXT}`,
  "target with obs-text": `GET /caf\xe9 HTTP/1.1\r\n${H}\r\n${NEXT}`,
  "HTTP/1.0 keep-alive": `GET /x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n${NEXT}`,
  "HTTP/1.0 without keep-alive": `GET /x HTTP/1.0\r\n\r\n${NEXT}`,
  "HTTP/1.1 Connection: close": get("Connection: close\r\n"),
  "HTTP/1.10": `GET /x HTTP/1.10\r\n${H}\r\n${NEXT}`,
  "HTTP/1.2": `GET /x HTTP/1.2\r\n${H}\r\n${NEXT}`,
  "lower-case version": `GET /x http/1.1\r\n${H}\r\n${NEXT}`,
  "empty Host": `GET /x HTTP/1.1\r\nHost:\r\n\r\n${NEXT}`,
  "Host with a space": `GET /x HTTP/1.1\r\nHost: a.test b.test\r\n\r\n${NEXT}`,
  "Host with a comma": `GET /x HTTP/1.1\r\nHost: a.test,b.test\r\n\r\n${NEXT}`,
  "Host with a path": `GET /x HTTP/1.1\r\nHost: a.test/admin\r\n\r\n${NEXT}`,
  "Host with userinfo": `GET /x HTTP/1.1\r\nHost: b.test@a.test\r\n\r\n${NEXT}`,
  "three pipelined requests, one with a body": `GET /1 HTTP/1.1\r\n${H}\r\nPOST /2 HTTP/1.1\r\n${H}Content-Length: 3\r\n\r\nabc${NEXT}`,
  "a request inside a Content-Length body": post(`Content-Length: ${NEXT.length}\r\n`, NEXT),
  "a request after a chunked body": chunked("0\r\n\r\nGET /admin HTTP/1.1\r\nHost: a.test\r\n\r\n"),
  "a request inside a chunk": chunked(`${NEXT.length.toString(16)}\r\n${NEXT}\r\n0\r\n\r\n`),
  "Expect: 100-continue": post("Expect: 100-continue\r\nContent-Length: 2\r\n", "hi"),
  "Upgrade with Connection: upgrade": get("Connection: Upgrade\r\nUpgrade: websocket\r\n"),
  "Upgrade among Connection tokens": get("Connection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n"),
  "Upgrade without Connection: upgrade": get("Upgrade: websocket\r\n"),
  "Upgrade with a body": `POST /ws HTTP/1.1\r\n${H}Connection: Upgrade\r\nUpgrade: h2c\r\nContent-Length: 3\r\n\r\nabc${NEXT}`,
  CONNECT: `CONNECT a.test:443 HTTP/1.1\r\nHost: a.test:443\r\n\r\n${NEXT}`,
  "head 100 bytes under the limit": paddedHead(MAX_HEAD - 100),
  "head at the limit": paddedHead(MAX_HEAD),
  "head just over the limit": paddedHead(MAX_HEAD + 1),
  "head 100 bytes over the limit": paddedHead(MAX_HEAD + 100),
  "head 2 bytes over the limit, CRLF CRLF not counted": paddedHead(MAX_HEAD + 2),
  "head 4 bytes over the limit, the most CRLF CRLF allows": paddedHead(MAX_HEAD + 4),
  "chunk extension with an unclosed quote": chunked('5;a="\r\nhello\r\n0\r\n\r\n'),
  "chunk extension without a name": chunked("5;\r\nhello\r\n0\r\n\r\n"),
  "chunk extension value with a space": chunked("5;a=b c\r\nhello\r\n0\r\n\r\n"),
  "chunk extension value with obs-text": chunked("5;a=\xe9\r\nhello\r\n0\r\n\r\n"),
  "chunk extension with a quoted-pair": chunked('5;a="b\\"c"\r\nhello\r\n0\r\n\r\n'),
  "two chunk extensions": chunked("5;a=1;b\r\nhello\r\n0\r\n\r\n"),
  "Content-Length in the trailers": chunked("0\r\nContent-Length: 50\r\n\r\n"),
  "Transfer-Encoding in the trailers": chunked("0\r\nTransfer-Encoding: chunked\r\n\r\n"),
  "Transfer-Encoding: chunked and NBSP": post("Transfer-Encoding: chunked\xa0\r\n", "0\r\n\r\n"),
  "Transfer-Encoding: NBSP and chunked": post("Transfer-Encoding: \xa0chunked\r\n", "0\r\n\r\n"),
  "Content-Length and NBSP": post("Content-Length: 5\xa0\r\n", "hello"),
  "Host between NBSPs": `GET /x HTTP/1.1\r\nHost: \xa0a.test\xa0\r\n\r\n${NEXT}`,
  "value ending in NBSP": get("X-Tenant: acme\xa0\r\n"),
};

/** Inputs Sigil refuses and llhttp accepts, on purpose. */
const SIGIL_STRICTER: Record<string, { input: string; why: string }> = {
  "Transfer-Encoding: identity, chunked": {
    input: post("Transfer-Encoding: identity, chunked\r\n", "0\r\n\r\n"),
    why: "one coding only: a list is where parsers disagree",
  },
  "Transfer-Encoding in HTTP/1.0": {
    input: `POST /x HTTP/1.0\r\n${H}Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n`,
    why: "RFC 9112 §6.1: an HTTP/1.0 recipient cannot have meant chunked",
  },
  "Content-Length of 16 digits": {
    input: post("Content-Length: 0000000000000005\r\n", "hello"),
    why: "digits are bounded so the value is always exact",
  },
  "two spaces after the method": {
    input: `GET  /x HTTP/1.1\r\n${H}\r\n${NEXT}`,
    why: "single SP separators only",
  },
  "two spaces before the version": {
    input: `GET /x  HTTP/1.1\r\n${H}\r\n${NEXT}`,
    why: "single SP separators only",
  },
  "empty line before the request line": {
    input: `\r\nGET /x HTTP/1.1\r\n${H}\r\n${NEXT}`,
    why: "no leading empty lines (RFC 9112 §2.2 allows ignoring, not requires)",
  },
  "empty line after a Content-Length body": {
    input: post("Content-Length: 4\r\n", "0\r\n\r\nGET /admin HTTP/1.1\r\nHost: a.test\r\n\r\n"),
    why: "a body one byte short of the CRLF a client may have meant is refused, not skipped",
  },
  "HTTP/0.9": { input: "GET /x\r\n\r\n", why: "no HTTP/0.9" },
  "HTTP/2.0 over HTTP/1 framing": { input: `GET /x HTTP/2.0\r\n${H}\r\n${NEXT}`, why: "1.0 and 1.1 only" },
  "HTTP/1.1 without Host": { input: `GET /x HTTP/1.1\r\n\r\n${NEXT}`, why: "RFC 9112 §3.2: 400" },
  "two Host fields": {
    input: get("Host: b.test\r\n"),
    why: "RFC 9112 §3.2: 400; policy decides on one host",
  },
  "Connection naming Content-Length": {
    input: `POST /x HTTP/1.1\r\n${H}Connection: Content-Length\r\nContent-Length: ${NEXT.length}\r\n\r\n${NEXT}`,
    why: "a proxy drops fields named in Connection: the next hop would not frame by it",
  },
  "Connection naming Content-Length among other tokens": {
    input: post(`Connection: keep-alive, content-length\r\nContent-Length: 5\r\n`, "hello"),
    why: "a proxy drops fields named in Connection: the next hop would not frame by it",
  },
  "Connection naming Transfer-Encoding": {
    input: post("Connection: Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n"),
    why: "a proxy drops fields named in Connection: the next hop would not frame by it",
  },
  "Connection naming Host": {
    input: get("Connection: Host\r\n"),
    why: "a proxy drops fields named in Connection: the next hop would not route by the decided host",
  },
  "Connection option that is not a token": {
    input: get("Connection: keep-alive, \xa0host\r\n"),
    why: "Connection is a list of tokens; anything else is read differently by each hop",
  },
  "Host in the trailers": {
    input: chunked("0\r\nHost: b.test\r\n\r\n"),
    why: "a routing field after the decision was made on the head's",
  },
  "head 4 bytes over the limit, CRLF CRLF not counted": {
    input: paddedHead(MAX_HEAD + 5),
    why: "the limit counts the head without its final CRLF CRLF; llhttp's counts differently",
  },
};

let llhttp: LlhttpServer;

beforeAll(async () => {
  llhttp = new LlhttpServer();
  await llhttp.start();
});

afterAll(async () => {
  await llhttp?.close();
});

function whole(text: string): Buffer[] {
  return [Buffer.from(text, "latin1")];
}

describe("requests: Sigil reads what llhttp reads", () => {
  it.each(Object.entries(AGREE))("%s", async (_name, text) => {
    const ours = sigilRequests(whole(text));
    const theirs = await llhttp.read(Buffer.from(text, "latin1"));
    expect(comparable(ours)).toEqual(comparable(theirs));
  });
});

describe("requests: Sigil is stricter than llhttp on purpose", () => {
  it.each(Object.entries(SIGIL_STRICTER))("%s", async (_name, { input }) => {
    const ours = sigilRequests(whole(input));
    const theirs = await llhttp.read(Buffer.from(input, "latin1"));
    expect(ours.end).toBe("refused");
    expect(theirs.messages.length).toBeGreaterThan(ours.messages.length);
    // Everything before the refusal is read alike.
    expect(ours.messages).toEqual(theirs.messages.slice(0, ours.messages.length));
  });
});

/** Deterministic pseudo-random numbers in [0, 1), so a failing split can be replayed. */
function random(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 0x100000000;
  };
}

function randomSplit(bytes: Buffer, next: () => number): Buffer[] {
  const pieces: Buffer[] = [];
  let at = 0;
  while (at < bytes.length) {
    const n = 1 + Math.floor(next() * 24);
    pieces.push(bytes.subarray(at, at + n));
    at += n;
  }
  return pieces;
}

describe("requests: the reading does not depend on how the bytes arrive", () => {
  const inputs = [...Object.entries(AGREE), ...Object.entries(SIGIL_STRICTER).map(([k, v]) => [k, v.input])];
  it.each(inputs)("%s", (_name, text) => {
    const bytes = Buffer.from(text as string, "latin1");
    const expected = sigilRequests([bytes]);
    const byteByByte = [...bytes].map((b) => Buffer.from([b]));
    expect(sigilRequests(byteByByte)).toEqual(expected);
    const next = random(bytes.length * 7919 + 17);
    for (let round = 0; round < 20; round++)
      expect(sigilRequests(randomSplit(bytes, next))).toEqual(expected);
  });
});

// --- responses ---

interface ResponseReading {
  readonly status?: number;
  readonly headers?: readonly string[];
  readonly body?: string;
  readonly trailers?: readonly string[];
  readonly end: "ok" | "refused";
}

/**
 * Sigil's reading of a response to a `method` request with the sidecar's steps: interim 1xx
 * skipped, no body for HEAD, 204 and 304, else chunked, Content-Length or until the close. `rest`
 * says how many bytes followed the end of the response.
 */
function sigilResponse(method: string, bytes: Buffer): ResponseReading & { rest?: number } {
  let buf = bytes;
  for (;;) {
    const end = headEnd(buf, 0);
    if (end < 0) return { end: "refused" };
    let res;
    try {
      res = parseResponseHead(buf.toString("latin1", 0, end));
    } catch (err) {
      if (!(err instanceof HeadError)) throw err;
      return { end: "refused" };
    }
    buf = buf.subarray(end);
    if (res.status === 101) return { end: "refused" };
    if (res.status < 200) continue;
    const noBody = method === "HEAD" || res.status === 204 || res.status === 304;
    const body = noBody
      ? new BodyFramer("none", 0, 0)
      : res.chunked
        ? new BodyFramer("chunked", 0, 64 * 1024)
        : res.contentLength !== null
          ? new BodyFramer("length", res.contentLength, 0)
          : new BodyFramer("close", 0, 0);
    const spans: number[] = [];
    let n: number;
    try {
      n = body.consume(buf, 0, spans);
    } catch (err) {
      if (!(err instanceof FramingError)) throw err;
      return { end: "refused" };
    }
    // The scripted server closes after the response.
    body.endOfInput();
    if (!body.done) return { end: "refused" };
    const payload: string[] = [];
    let lastDataEnd = 0;
    for (let i = 0; i < spans.length; i += 2) {
      payload.push(buf.toString("latin1", spans[i], spans[i + 1]));
      if ((spans[i + 1] as number) > (spans[i] as number)) lastDataEnd = spans[i + 1] as number;
    }
    const trailers = body.kind === "chunked" ? trailersOf(buf.toString("latin1", 0, n), lastDataEnd) : [];
    return {
      status: res.status,
      headers: res.raw,
      body: payload.join(""),
      trailers,
      end: "ok",
      rest: buf.length - n,
    };
  }
}

/** llhttp's reading of the same response: node:http's client against a server writing `bytes`. */
async function llhttpResponse(method: string, bytes: Buffer): Promise<ResponseReading> {
  const server = net.createServer((s) => {
    s.on("error", () => undefined);
    s.once("data", () => s.end(bytes));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  try {
    return await new Promise<ResponseReading>((resolve) => {
      const req = http.request({ host: "127.0.0.1", port, method, path: "/", agent: false }, (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () =>
          resolve({
            status: res.statusCode as number,
            headers: res.rawHeaders,
            body: Buffer.concat(chunks).toString("latin1"),
            trailers: res.rawTrailers,
            end: "ok",
          }),
        );
        res.on("error", () => resolve({ end: "refused" }));
        res.on("aborted", () => resolve({ end: "refused" }));
      });
      req.on("error", () => resolve({ end: "refused" }));
      req.end();
    });
  } finally {
    server.close();
  }
}

const OK = "HTTP/1.1 200 OK\r\n";
const RESPONSES_AGREE: Record<string, [method: string, response: string]> = {
  "Content-Length": ["GET", `${OK}Content-Length: 2\r\n\r\nok`],
  "status line without a reason": ["GET", "HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok"],
  "status line with an empty reason": ["GET", "HTTP/1.1 200 \r\nContent-Length: 2\r\n\r\nok"],
  "reason with a tab and obs-text": ["GET", "HTTP/1.1 200 O\tK\xe9\r\nContent-Length: 2\r\n\r\nok"],
  "HTTP/1.0 status line": ["GET", "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"],
  "status 600": ["GET", "HTTP/1.1 600 X\r\nContent-Length: 2\r\n\r\nok"],
  "HTTP/1.10 status line": ["GET", "HTTP/1.10 200 OK\r\nContent-Length: 2\r\n\r\nok"],
  "two-digit status": ["GET", "HTTP/1.1 20 OK\r\nContent-Length: 2\r\n\r\nok"],
  "four-digit status": ["GET", "HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\nok"],
  "two spaces before the status": ["GET", "HTTP/1.1  200 OK\r\nContent-Length: 2\r\n\r\nok"],
  "status line ended by LF": ["GET", "HTTP/1.1 200 OK\nContent-Length: 2\r\n\r\nok"],
  "HEAD with Content-Length": ["HEAD", `${OK}Content-Length: 10\r\n\r\n`],
  "HEAD with chunked": ["HEAD", `${OK}Transfer-Encoding: chunked\r\n\r\n`],
  "204 with Content-Length": ["GET", "HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n"],
  "304 with Content-Length": ["GET", "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n"],
  "103 before the response": [
    "GET",
    `HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n${OK}Content-Length: 2\r\n\r\nok`,
  ],
  "100 before the response": ["GET", `HTTP/1.1 100 Continue\r\n\r\n${OK}Content-Length: 2\r\n\r\nok`],
  "close-delimited body": ["GET", `${OK}\r\nuntil the end`],
  "close-delimited HTTP/1.0 body": ["GET", "HTTP/1.0 200 OK\r\n\r\nuntil the end"],
  "Content-Length and Transfer-Encoding": [
    "GET",
    `${OK}Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`,
  ],
  "chunked with an extension and trailers": [
    "GET",
    `${OK}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Sum: 11\r\nX-B: 2\r\n\r\n`,
  ],
  "chunk size with junk": ["GET", `${OK}Transfer-Encoding: chunked\r\n\r\n2x\r\nok\r\n0\r\n\r\n`],
  "Content-Length twice": ["GET", `${OK}Content-Length: 2\r\nContent-Length: 2\r\n\r\nok`],
  "Content-Length list": ["GET", `${OK}Content-Length: 2, 2\r\n\r\nok`],
  "obs-fold": ["GET", `${OK}X-A: a\r\n b\r\nContent-Length: 2\r\n\r\nok`],
  "NUL in a field": ["GET", `${OK}X-A: \x00\r\nContent-Length: 2\r\n\r\nok`],
  "space before the colon": ["GET", `${OK}Content-Length : 2\r\n\r\nok`],
  "body shorter than its Content-Length": ["GET", `${OK}Content-Length: 10\r\n\r\nok`],
  "chunked body cut before its last chunk": ["GET", `${OK}Transfer-Encoding: chunked\r\n\r\n2\r\nok\r\n`],
  "chunk extension with an unclosed quote": [
    "GET",
    `${OK}Transfer-Encoding: chunked\r\n\r\n2;a="\r\nok\r\n0\r\n\r\n`,
  ],
  "chunk extension without a name": ["GET", `${OK}Transfer-Encoding: chunked\r\n\r\n2;\r\nok\r\n0\r\n\r\n`],
  "Content-Length in the trailers": [
    "GET",
    `${OK}Transfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nContent-Length: 50\r\n\r\n`,
  ],
  "Content-Length and NBSP": ["GET", `${OK}Content-Length: 2\xa0\r\n\r\nok`],
};

const RESPONSES_SIGIL_STRICTER: Record<string, [method: string, response: string]> = {
  "HTTP/2.0 status line": ["GET", "HTTP/2.0 200 OK\r\nContent-Length: 2\r\n\r\nok"],
  "status 099": ["GET", "HTTP/1.1 099 OK\r\nContent-Length: 2\r\n\r\nok"],
  "Transfer-Encoding: gzip, chunked": [
    "GET",
    `${OK}Transfer-Encoding: gzip, chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n`,
  ],
  "Transfer-Encoding: identity": ["GET", `${OK}Transfer-Encoding: identity\r\n\r\nuntil the end`],
  "Transfer-Encoding: chunked and NBSP": [
    "GET",
    `${OK}Transfer-Encoding: chunked\xa0\r\n\r\n2\r\nok\r\n0\r\n\r\n`,
  ],
  "Connection naming Content-Length": [
    "GET",
    `${OK}Connection: Content-Length\r\nContent-Length: 2\r\n\r\nok`,
  ],
  "Connection naming Transfer-Encoding": [
    "GET",
    `${OK}Connection: Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n`,
  ],
  "Transfer-Encoding in the trailers": [
    "GET",
    `${OK}Transfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nTransfer-Encoding: chunked\r\n\r\n`,
  ],
};

describe("responses: Sigil reads what llhttp reads", () => {
  it.each(Object.entries(RESPONSES_AGREE))("%s", async (_name, [method, text]) => {
    const bytes = Buffer.from(text, "latin1");
    const { rest: _rest, ...ours } = sigilResponse(method, bytes);
    expect(ours).toEqual(await llhttpResponse(method, bytes));
  });

  it("ends a Content-Length response where its length says, not at the close", () => {
    const next = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    const r = sigilResponse("GET", Buffer.from(`${OK}Content-Length: 2\r\n\r\nok${next}`, "latin1"));
    expect(r.body).toBe("ok");
    expect(r.rest).toBe(next.length);
  });
});

describe("responses: Sigil is stricter than llhttp on purpose", () => {
  it.each(Object.entries(RESPONSES_SIGIL_STRICTER))("%s", async (_name, [method, text]) => {
    const bytes = Buffer.from(text, "latin1");
    expect(sigilResponse(method, bytes).end).toBe("refused");
    expect((await llhttpResponse(method, bytes)).end).toBe("ok");
  });
});
