/**
 * HTTP/1.1 request framing, differentially against llhttp (node:http's parser, on loopback): for
 * every input, each message Sigil reads must be the message llhttp reads at the same place (method,
 * target, version, fields, framing, body, trailers), and when Sigil reads the stream to its end
 * llhttp must end it the same way. Sigil may refuse earlier than llhttp (it is stricter on purpose);
 * it may never accept a message llhttp refuses or read one differently: that is request smuggling.
 * One difference is by design: llhttp knows a fixed list of methods and refuses any other, while
 * Sigil reads any RFC 9110 token as a method (extension methods are legal), so a stream llhttp
 * refuses for its method alone is not compared; its framing is still the same token either way.
 */
import { METHODS } from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LlhttpServer, comparable, sigilRequests } from "../support/http1-readings.ts";
import { corpus, fuzz, mutatedBytes } from "./fuzz.ts";

const DICTIONARY = [
  "\r\n",
  "\r\n\r\n",
  "\n",
  "\r",
  "\t",
  " ",
  ":",
  ";",
  ",",
  '"',
  "Transfer-Encoding: chunked\r\n",
  "Content-Length: 5\r\n",
  "Content-Length: ",
  "Connection: close\r\n",
  "Connection: keep-alive\r\n",
  "Upgrade: h2c\r\n",
  "Host: a.test\r\n",
  "0\r\n\r\n",
  "5\r\nhello\r\n",
  "chunked",
  "identity",
  "HTTP/1.0",
  "HTTP/1.1",
  "GET / HTTP/1.1\r\n",
  "POST /x HTTP/1.1\r\n",
  "\x00",
  "\x0b",
  "\xa0",
];

describe("fuzz: HTTP/1.1 request framing against llhttp", () => {
  let llhttp: LlhttpServer;

  beforeAll(async () => {
    llhttp = new LlhttpServer();
    await llhttp.start();
  });

  afterAll(async () => {
    await llhttp?.close();
  });

  it("reads no message llhttp reads otherwise, and accepts no stream llhttp refuses", async () => {
    const seeds = corpus("http1-framing");
    const { runs } = await fuzz("http1-framing", seeds, mutatedBytes(seeds, DICTIONARY), async (input) => {
      const ours = sigilRequests([input]);
      const theirs = await llhttp.read(input);
      const method = ours.messages[theirs.messages.length]?.method;
      if (theirs.reason === "HPE_INVALID_METHOD" && method !== undefined && !METHODS.includes(method)) return;
      expect(theirs.messages.slice(0, ours.messages.length)).toEqual(ours.messages);
      if (ours.end === "ok" || ours.end === "tunnel") expect(comparable(theirs)).toEqual(comparable(ours));
    });
    expect(runs).toBeGreaterThan(seeds.length);
  });
});
