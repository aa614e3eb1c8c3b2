/**
 * HPACK header blocks, which the HTTP/2 relay decodes from every peer: any bytes decode to a field
 * list or an HpackError (never another exception), a list never exceeds the bound without being
 * marked oversized, and what decodes re-encodes to a block that decodes to the same fields, every
 * never-indexed mark kept (the relay forwards exactly what it decided on).
 */
import { describe, expect, it } from "vitest";
import { HpackDecoder } from "../../sidecar/http/http2/hpack/decoder.ts";
import { HpackEncoder } from "../../sidecar/http/http2/hpack/encoder.ts";
import { HpackError } from "../../sidecar/http/http2/hpack/hpack-error.ts";
import { corpus, fuzz, mutatedBytes } from "./fuzz.ts";

const MAX_LIST = 1024;

describe("fuzz: HPACK", () => {
  it("decodes any block to fields or an HpackError, and what decodes survives re-encoding", async () => {
    const seeds = corpus("hpack");
    const { runs } = await fuzz(
      "hpack",
      seeds,
      mutatedBytes(seeds, ["\x3f\xe1\x1f", "\xbe", "\x7f", "\xff\xff\xff\x0f"]),
      (input) => {
        let block;
        try {
          block = new HpackDecoder({ maxTableSize: 4096, maxListSize: MAX_LIST }).decode(input);
        } catch (err) {
          expect(err).toBeInstanceOf(HpackError);
          return;
        }
        expect(block.fields.length % 2).toBe(0);
        if (block.oversized) return;
        expect(block.listSize).toBeLessThanOrEqual(MAX_LIST);
        const again = new HpackDecoder({ maxTableSize: 4096, maxListSize: MAX_LIST }).decode(
          new HpackEncoder().encode(block.fields, block.neverIndexed),
        );
        expect(again.fields).toEqual(block.fields);
        // The encoder adds never-indexed marks of its own (credentials); it drops none.
        expect(again.neverIndexed).toEqual(expect.arrayContaining([...block.neverIndexed]));
      },
    );
    expect(runs).toBeGreaterThan(seeds.length);
  });
});
