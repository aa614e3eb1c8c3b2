/**
 * Protocol detection on a connection's first bytes (TLS ClientHello, HTTP/2 prior-knowledge
 * preface, HTTP/1.x request line): any bytes classify without throwing, a ClientHello parses to
 * complete, incomplete or invalid, its mesh ALPN entries decode or are ignored, and the verdict does
 * not depend on how the bytes were split into reads (a client choosing its segments must not turn
 * HTTP into opaque TCP, where no HTTP rule applies).
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { decodeMeshAlpn, encodeMeshAlpn } from "../../sidecar/tls/alpn.ts";
import { parseClientHello } from "../../sidecar/tls/client-hello.ts";
import { classify } from "../../sidecar/proxy/detect.ts";
import { corpus, fuzz, mutatedBytes } from "./fuzz.ts";

const DICTIONARY = [
  "\r\n",
  "\n",
  " ",
  "HTTP/1.1",
  "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
  "\x16\x03\x01",
  "sigil/1;h2;5432",
  "h2",
];

/** The verdict reached reading `input` in pieces ending at `cuts`, or "more" if none was. */
function inPieces(input: Buffer, cuts: readonly number[]): ReturnType<typeof classify> {
  for (const cut of [...cuts, input.length]) {
    const verdict = classify(input.subarray(0, cut));
    if (verdict !== "more") return verdict;
  }
  return "more";
}

describe("fuzz: protocol detection", () => {
  it("classifies any bytes the same however they were split", async () => {
    const seeds = corpus("protocol-detection");
    const inputs = mutatedBytes(seeds, DICTIONARY).chain((input) =>
      fc.tuple(
        fc.constant(input),
        fc.uniqueArray(fc.integer({ min: 1, max: Math.max(1, input.length) }), { maxLength: 4 }),
      ),
    );
    const { runs } = await fuzz(
      "protocol-detection",
      seeds.map((s) => [s, [1, 5, 24]] as [Buffer, number[]]),
      inputs,
      ([input, cuts]) => {
        const whole = classify(input);
        const pieces = inPieces(
          input,
          [...cuts].sort((a, b) => a - b),
        );
        if (whole !== "more") expect(pieces).toEqual(whole);
        const hello = parseClientHello(input);
        expect(["complete", "incomplete", "invalid"]).toContain(hello.state);
        if (hello.state !== "complete") return;
        for (const offered of hello.hello.alpn) {
          const target = decodeMeshAlpn(offered);
          if (target) expect(encodeMeshAlpn(target)).toBe(offered);
        }
      },
    );
    expect(runs).toBeGreaterThan(seeds.length);
  });
});
