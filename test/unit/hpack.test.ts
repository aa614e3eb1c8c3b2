/**
 * HPACK (RFC 7541): the Appendix C examples decoded and, where the encoder makes the same choices as
 * the RFC's encoder, produced byte for byte; the decoder's refusals; and round trips of generated
 * header lists through one encoder and one decoder that must stay in step across blocks.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { HpackDecoder } from "../../sidecar/http/http2/hpack/decoder.ts";
import { HpackEncoder } from "../../sidecar/http/http2/hpack/encoder.ts";
import { HpackError } from "../../sidecar/http/http2/hpack/hpack-error.ts";
import { huffmanDecode, huffmanEncode, huffmanLength } from "../../sidecar/http/http2/hpack/huffman.ts";

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ""), "hex");
const decoder = (maxTableSize = 4096, maxListSize = 1 << 20): HpackDecoder =>
  new HpackDecoder({ maxTableSize, maxListSize });

const FIRST = [":method", "GET", ":scheme", "http", ":path", "/", ":authority", "www.example.com"];
const SECOND = [...FIRST, "cache-control", "no-cache"];
const THIRD = [
  ":method",
  "GET",
  ":scheme",
  "https",
  ":path",
  "/index.html",
  ":authority",
  "www.example.com",
  "custom-key",
  "custom-value",
];

describe("HPACK: RFC 7541 Appendix C", () => {
  it("C.2: each literal representation and an indexed field", () => {
    expect(
      decoder().decode(hex("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572")).fields,
    ).toEqual(["custom-key", "custom-header"]);
    expect(decoder().decode(hex("040c 2f73 616d 706c 652f 7061 7468")).fields).toEqual([
      ":path",
      "/sample/path",
    ]);
    const never = decoder().decode(hex("1008 7061 7373 776f 7264 0673 6563 7265 74"));
    expect(never.fields).toEqual(["password", "secret"]);
    expect(never.neverIndexed).toEqual([0]);
    expect(decoder().decode(hex("82")).fields).toEqual([":method", "GET"]);
  });

  it("C.3: three requests without Huffman coding share one table", () => {
    const d = decoder();
    expect(d.decode(hex("8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d")).fields).toEqual(FIRST);
    expect(d.decode(hex("8286 84be 5808 6e6f 2d63 6163 6865")).fields).toEqual(SECOND);
    expect(
      d.decode(hex("8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65")).fields,
    ).toEqual(THIRD);
  });

  it("C.4: the same requests Huffman-coded, decoded and encoded byte for byte", () => {
    const blocks = [
      "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
      "8286 84be 5886 a8eb 1064 9cbf",
      "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
    ];
    const d = decoder();
    const e = new HpackEncoder();
    for (const [i, fields] of [FIRST, SECOND, THIRD].entries()) {
      expect(d.decode(hex(blocks[i] as string)).fields).toEqual(fields);
      expect(e.encode(fields).toString("hex")).toBe((blocks[i] as string).replace(/\s+/g, ""));
    }
  });

  it("C.6: three Huffman-coded responses through a 256-octet table, evicting as they go", () => {
    const d = decoder(256);
    const date1 = "Mon, 21 Oct 2013 20:13:21 GMT";
    expect(
      d.decode(
        hex(
          "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
        ),
      ).fields,
    ).toEqual([
      ":status",
      "302",
      "cache-control",
      "private",
      "date",
      date1,
      "location",
      "https://www.example.com",
    ]);
    expect(d.decode(hex("4883 640e ff c1 c0 bf")).fields).toEqual([
      ":status",
      "307",
      "cache-control",
      "private",
      "date",
      date1,
      "location",
      "https://www.example.com",
    ]);
    expect(
      d.decode(
        hex(
          "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab 77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 3160 65c0 03ed 4ee5 b106 3d50 07",
        ),
      ).fields,
    ).toEqual([
      ":status",
      "200",
      "cache-control",
      "private",
      "date",
      "Mon, 21 Oct 2013 20:13:22 GMT",
      "location",
      "https://www.example.com",
      "content-encoding",
      "gzip",
      "set-cookie",
      "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1",
    ]);
  });
});

describe("HPACK: what the decoder refuses", () => {
  const refuses = (block: string, message: RegExp, d = decoder()): void => {
    expect(() => d.decode(hex(block))).toThrow(HpackError);
    expect(() => decoder().decode(hex(block))).toThrow(message);
  };

  it("refuses index 0 and indexes past the tables", () => {
    refuses("80", /index 0/);
    refuses("be", /past the dynamic table/);
    refuses("7f 00 01 61", /past the dynamic table/);
  });

  it("refuses integers and strings that run past the block, and integers too large to be real", () => {
    refuses("ff", /integer runs past/);
    refuses("ff ff ff ff ff ff 7f", /integer larger than/);
    refuses("40 05 61 62", /string literal runs past/);
    refuses("40", /string literal runs past/);
  });

  it("refuses a table size update above the announced size or after a field", () => {
    refuses("3f e2 1f", /above the 4096 allowed/);
    refuses("82 20", /after the first field/);
    expect(decoder().decode(hex("20 3f e1 1f 82")).fields).toEqual([":method", "GET"]);
  });

  it("refuses Huffman strings with EOS, long padding or padding that is not ones (§5.2)", () => {
    // "a" is 00011 (5 bits): padded with ones it is 0x1f; with zeros it is not EOS's prefix.
    expect(huffmanDecode(hex("1f"))).toEqual(Buffer.from("a"));
    expect(huffmanDecode(hex("18"))).toBe("padding not EOS's prefix");
    expect(huffmanDecode(hex("1f ff"))).toBe("padding longer than 7 bits");
    expect(huffmanDecode(hex("ff ff ff ff"))).toBe("EOS in string");
    refuses("40 81 18 81 1f", /Huffman string: padding not EOS's prefix/);
  });

  it("stops keeping fields past the list limit but still enters them in the table", () => {
    const big = "x".repeat(100);
    const e = new HpackEncoder();
    const d = decoder(4096, 200);
    const block = d.decode(e.encode(["a", big, "b", big, "c", "1"]));
    expect(block.oversized).toBe(true);
    expect(block.fields).toEqual(["a", big]);
    expect(block.listSize).toBe(2 * (1 + 100 + 32) + (1 + 1 + 32));
    // The next block refers to entries the oversized one added: the tables are still in step.
    expect(d.decode(e.encode(["c", "1"])).fields).toEqual(["c", "1"]);
  });

  it("a block of indexes into one large entry stops growing at the limit (the HPACK bomb)", () => {
    const e = new HpackEncoder();
    const d = decoder(4096, 16 * 1024);
    d.decode(e.encode(["bomb", "y".repeat(3000)]));
    const block = d.decode(Buffer.alloc(10_000, 0xbe));
    expect(block.oversized).toBe(true);
    expect(block.fields.length).toBe(2 * 5);
  });
});

describe("HPACK: the encoder's choices", () => {
  it("never indexes credentials or short cookies, and keeps a field's never-indexed mark", () => {
    const e = new HpackEncoder();
    const d = decoder();
    const fields = ["authorization", "Bearer t", "cookie", "a=b", "x-secret", "s", "x-open", "o"];
    const first = d.decode(e.encode(fields, [2]));
    expect(first.fields).toEqual(fields);
    expect(first.neverIndexed).toEqual([0, 1, 2]);
    // Sent again: only x-open became an index.
    const again = e.encode(fields, [2]);
    expect(again.at(-1)).toBe(0xbe);
    expect(d.decode(again).neverIndexed).toEqual([0, 1, 2]);
  });

  it("announces a smaller table and then the final size when the peer's setting shrinks and grows (§4.2)", () => {
    const e = new HpackEncoder();
    const d = decoder();
    d.decode(e.encode(["x-a", "1"]));
    e.setMaxTableSize(0);
    e.setMaxTableSize(1024);
    const block = e.encode(["x-a", "1"]);
    expect(block.subarray(0, 4).toString("hex")).toBe("203fe107");
    expect(d.decode(block).fields).toEqual(["x-a", "1"]);
  });

  it("keeps its table at its own limit whatever the peer allows", () => {
    const e = new HpackEncoder(1024);
    e.setMaxTableSize(1 << 20);
    const d = decoder(1024);
    expect(d.decode(e.encode(["x", "1"])).fields).toEqual(["x", "1"]);
  });
});

const name = fc.stringMatching(/^[a-z0-9-]{1,12}$/);
const latin1 = fc.uint8Array({ maxLength: 40 }).map((a) => Buffer.from(a).toString("latin1"));

describe("HPACK: generated round trips", () => {
  it("Huffman-codes any octets and decodes them back", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (octets) => {
        const s = Buffer.from(octets).toString("latin1");
        const out = Buffer.alloc(huffmanLength(s));
        expect(huffmanEncode(s, out, 0)).toBe(out.length);
        expect(huffmanDecode(out)).toEqual(Buffer.from(octets));
      }),
      { seed: 20261206, numRuns: 500 },
    );
  });

  it("one encoder and one decoder stay in step over many blocks and table size changes", () => {
    const field = fc.tuple(
      fc.oneof(name, fc.constantFrom(":path", "cookie", "authorization", "content-type")),
      latin1,
    );
    const step = fc.record({
      fields: fc.array(field, { maxLength: 12 }),
      resize: fc.option(fc.constantFrom(0, 64, 256, 4096), { freq: 5 }),
    });
    fc.assert(
      fc.property(fc.array(step, { minLength: 1, maxLength: 30 }), (steps) => {
        const e = new HpackEncoder();
        const d = decoder();
        for (const { fields, resize } of steps) {
          if (resize !== null) e.setMaxTableSize(resize);
          const flat = fields.flat();
          expect(d.decode(e.encode(flat)).fields).toEqual(flat);
        }
      }),
      { seed: 20261206, numRuns: 300 },
    );
  });
});
