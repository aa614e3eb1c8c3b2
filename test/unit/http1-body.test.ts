import { describe, expect, it } from "vitest";
import { BodyFramer, FramingError } from "../../sidecar/http/http1/body.ts";

const chunked = (maxTrailerBytes = 1024) => new BodyFramer("chunked", 0, maxTrailerBytes);

/** Feeds `text` to a framer one byte at a time: boundaries must not depend on how reads split. */
function bytewise(framer: BodyFramer, text: string): number {
  const buf = Buffer.from(text, "latin1");
  let taken = 0;
  for (let i = 0; i < buf.length && !framer.done; i++) taken += framer.consume(buf.subarray(i, i + 1), 0);
  return taken;
}

function refusal(text: string, maxTrailerBytes?: number): string {
  const framer = chunked(maxTrailerBytes);
  try {
    framer.consume(Buffer.from(text, "latin1"), 0);
  } catch (err) {
    expect(err).toBeInstanceOf(FramingError);
    return (err as FramingError).reason;
  }
  throw new Error(`accepted; done=${framer.done}`);
}

describe("Content-Length bodies", () => {
  it("count down exactly and leave the next request's bytes alone", () => {
    const framer = BodyFramer.forRequest(5, false, 0);
    const buf = Buffer.from("xxhelloGET / HTTP/1.1\r\n");
    expect(framer.consume(buf, 2)).toBe(5);
    expect(framer.done).toBe(true);
    expect(framer.dataBytes).toBe(5);
    expect(framer.consume(buf, 7)).toBe(0);
  });

  it("span several reads", () => {
    const framer = BodyFramer.forRequest(6, false, 0);
    expect(framer.consume(Buffer.from("abc"), 0)).toBe(3);
    expect(framer.done).toBe(false);
    expect(framer.consume(Buffer.from("defg"), 0)).toBe(3);
    expect(framer.done).toBe(true);
  });

  it("are empty without framing fields or with length 0", () => {
    expect(BodyFramer.forRequest(null, false, 0).done).toBe(true);
    expect(BodyFramer.forRequest(0, false, 0).done).toBe(true);
  });
});

describe("chunked bodies", () => {
  const body = '5\r\nhello\r\n1;name=value;q="a b"\r\n!\r\n0\r\nX-Sum: 1\r\n\r\n';

  it("end exactly after the trailer section, whatever the read boundaries", () => {
    const next = "GET /admin HTTP/1.1\r\n\r\n";
    const whole = chunked();
    expect(whole.consume(Buffer.from(body + next, "latin1"), 0)).toBe(body.length);
    expect(whole.done).toBe(true);
    expect(whole.dataBytes).toBe(6);
    const split = chunked();
    expect(bytewise(split, body + next)).toBe(body.length);
    expect(split.done).toBe(true);
  });

  it("report the payload ranges without the framing", () => {
    const framer = chunked();
    const buf = Buffer.from(body, "latin1");
    const spans: number[] = [];
    framer.consume(buf, 0, spans);
    const payload = [];
    for (let i = 0; i < spans.length; i += 2) payload.push(buf.subarray(spans[i], spans[i + 1]).toString());
    expect(payload.join("")).toBe("hello!");
  });

  it("accept extensions with and without values, quoted strings and quoted pairs", () => {
    const framer = chunked();
    framer.consume(Buffer.from('5;a;b=1;c="x;\\"y"\r\nhello\r\n0\r\n\r\n', "latin1"), 0);
    expect(framer.done).toBe(true);
    expect(framer.dataBytes).toBe(5);
  });

  it("accept upper-case hex and leading zeros within the digit bound", () => {
    const framer = chunked();
    framer.consume(Buffer.from(`000A\r\n${"x".repeat(10)}\r\n0\r\n\r\n`), 0);
    expect(framer.done).toBe(true);
    expect(framer.dataBytes).toBe(10);
  });

  const attacks: [string, string, RegExp][] = [
    ["a negative size", "-1\r\n", /not a hexadecimal number/],
    ["a 0x prefix", "0x5\r\nhello\r\n", /invalid character after the chunk size/],
    ["hex junk after the digits", "5g\r\nhello\r\n", /invalid character after the chunk size/],
    ["a space after the size", "5 \r\nhello\r\n", /invalid character after the chunk size/],
    ["an empty size", "\r\nhello\r\n", /not a hexadecimal number/],
    ["a size that overflows", "fffffffffffffffff\r\n", /chunk size too large/],
    ["a size past 2^53", "20000000000000\r\n", /chunk size too large/],
    ["a bare LF after the size", "5\nhello\r\n", /invalid character after the chunk size/],
    ["a CR without LF after the size", "5\rhello\r\n", /not ended by CRLF/],
    ["data longer than its size", "3\r\nhello\r\n", /longer than its size/],
    ["data ended by a bare LF", "5\r\nhello\n0\r\n\r\n", /longer than its size/],
    ["a NUL in an extension", "5;a=\x00\r\nhello\r\n", /chunk extension without a value/],
    ["a bare LF in an extension", "5;a\nb\r\nhello\r\n", /invalid character in a chunk extension name/],
    ["an extension without end", `5;${"a".repeat(5000)}`, /chunk size line too long/],
    ["a trailer without a name", "0\r\n: x\r\n\r\n", /malformed trailer field/],
    ["an obs-folded trailer", "0\r\nX-A: b\r\n c\r\n\r\n", /malformed trailer field/],
    ["a trailer name with a space", "0\r\nX A: b\r\n\r\n", /invalid trailer field name/],
    ["a NUL in a trailer", "0\r\nX-A: \x00\r\n\r\n", /control character in a trailer field/],
    ["a trailer ended by a bare LF", "0\r\nX-A: b\n\r\n", /control character in a trailer field/],
    ["a last chunk without the final CRLF", "0\r\n\rX", /not ended by CRLF/],
    ["an extension without a name", "5;\r\nhello\r\n", /without a name/],
    ["an extension name after whitespace", "5; a=b\r\nhello\r\n", /without a name/],
    ["an unclosed quoted extension", '5;a="\r\nhello\r\n', /quoted chunk extension/],
    ["a space inside an extension value", "5;a=b c\r\nhello\r\n", /chunk extension value/],
    ["obs-text as an extension value", "5;a=\xe9\r\nhello\r\n", /without a value/],
    ["junk after a quoted extension", '5;a="b"c\r\nhello\r\n', /after a quoted chunk extension/],
    [
      "Content-Length in the trailers",
      "0\r\nContent-Length: 5\r\n\r\n",
      /content-length in the trailer section/,
    ],
    [
      "Transfer-Encoding in the trailers",
      "0\r\nTransfer-Encoding: chunked\r\n\r\n",
      /transfer-encoding in the trailer/,
    ],
    ["Host in the trailers", "0\r\nhost: b.test\r\n\r\n", /host in the trailer section/],
    [
      "a caller identity in the trailers",
      "0\r\nX-Forwarded-Client-Cert: URI=spiffe://sigil.local/admin\r\n\r\n",
      /x-forwarded-client-cert in the trailer section/,
    ],
  ];

  it.each(attacks)("refuse %s", (_name, text, reason) => {
    expect(refusal(text)).toMatch(reason);
  });

  it("refuse a trailer section above its bound", () => {
    expect(refusal(`0\r\nX-Big: ${"a".repeat(200)}\r\n\r\n`, 64)).toMatch(/trailer section too large/);
  });

  it("refuse the same bytes whether or not they arrive split", () => {
    const framer = chunked();
    expect(() => bytewise(framer, "5\r\nhello\r\n-1\r\n")).toThrow(FramingError);
  });
});

describe("close-delimited bodies", () => {
  it("take every byte until the end of input", () => {
    const framer = new BodyFramer("close", 0, 0);
    expect(framer.consume(Buffer.from("abc"), 0)).toBe(3);
    expect(framer.done).toBe(false);
    framer.endOfInput();
    expect(framer.done).toBe(true);
    expect(framer.dataBytes).toBe(3);
  });
});
