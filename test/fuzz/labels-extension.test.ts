/**
 * The label extension of a peer's certificate (decoded from any chain a peer presents): any bytes
 * decode to labels or a LabelExtensionError, and the decoder accepts only the canonical encoding,
 * so what it accepts re-encodes to the same bytes (two readers can never see different labels).
 */
import { describe, expect, it } from "vitest";
import {
  LabelExtensionError,
  decodeLabelsExtension,
  encodeLabelsExtension,
} from "../../core/svid/labels-extension.ts";
import { corpus, fuzz, mutatedBytes } from "./fuzz.ts";

describe("fuzz: label extension", () => {
  it("decodes only canonical encodings, and refuses the rest with a LabelExtensionError", async () => {
    const seeds = corpus("labels-extension");
    const { runs } = await fuzz(
      "labels-extension",
      seeds,
      mutatedBytes(seeds, ["\x0c", "\x30", "\x81", "static"]),
      (input) => {
        let labels;
        try {
          labels = decodeLabelsExtension(input);
        } catch (err) {
          expect(err).toBeInstanceOf(LabelExtensionError);
          return;
        }
        expect(encodeLabelsExtension(labels).equals(input)).toBe(true);
      },
    );
    expect(runs).toBeGreaterThan(seeds.length);
  });
});
