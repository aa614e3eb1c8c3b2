import { describe, expect, it } from "vitest";
import type { AttestedLabel } from "../../core/labels.ts";
import { encodeOidContent, encodeSequence, encodeUtf8String } from "../../core/svid/der.ts";
import {
  LabelExtensionError,
  decodeLabelsExtension,
  encodeLabelsExtension,
  labelsExtensionDer,
  matchLabelsExtension,
} from "../../core/svid/labels-extension.ts";

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ""), "hex");

describe("labels extension codec", () => {
  it("encodes the documented example byte for byte", () => {
    expect(encodeLabelsExtension([{ key: "app", value: "api", provenance: "join-token" }])).toEqual(
      hex("3018 3016 0c03617070 0c03617069 0c0a6a6f696e2d746f6b656e"),
    );
  });

  it("round-trips in canonical key order regardless of input order", () => {
    const labels: AttestedLabel[] = [
      { key: "vuln.critical", value: "2", provenance: "metadata-file" },
      { key: "app", value: "naïve ✓", provenance: "static" },
      { key: "k8s.ns", value: "", provenance: "k8s-sat" },
    ];
    const decoded = decodeLabelsExtension(encodeLabelsExtension(labels));
    expect(decoded.map((l) => l.key)).toEqual(["app", "k8s.ns", "vuln.critical"]);
    expect(decoded).toEqual(expect.arrayContaining(labels));
  });

  it("refuses labels it must not sign", () => {
    expect(() =>
      encodeLabelsExtension([
        { key: "a", value: "1", provenance: "static" },
        { key: "a", value: "2", provenance: "proc" },
      ]),
    ).toThrow(/appears twice/);
    expect(() => encodeLabelsExtension([{ key: "-bad", value: "1", provenance: "static" }])).toThrow(
      /label key/,
    );
    expect(() => encodeLabelsExtension([{ key: "a", value: "x\ny", provenance: "static" }])).toThrow(
      /control/,
    );
  });

  it.each([
    ["trailing bytes", "3000 00"],
    ["indefinite length", "3080 0000"],
    ["non-minimal length", "3081 00"],
    ["length past the end", "3005 3000"],
    ["a label that is not a SEQUENCE", "3002 0c00"],
    ["two fields instead of three", "3008 3006 0c0161 0c0131"],
    ["a field that is not UTF8String", "300d 300b 0c0161 0c0131 130373746174"],
    ["invalid UTF-8", "3011 300f 0c0161 0c01ff 0c06737461746963"],
    ["unknown provenance", "300e 300c 0c0161 0c0131 0c0466616b65"],
  ])("rejects %s", (_name, der) => {
    expect(() => decodeLabelsExtension(hex(der))).toThrow(LabelExtensionError);
  });

  it("rejects unsorted and repeated keys, which would give one label set two encodings", () => {
    const label = (k: string, v: string) =>
      encodeSequence([encodeUtf8String(k), encodeUtf8String(v), encodeUtf8String("static")]);
    expect(() => decodeLabelsExtension(encodeSequence([label("b", "1"), label("a", "1")]))).toThrow(
      /out of order/,
    );
    expect(() => decodeLabelsExtension(encodeSequence([label("a", "1"), label("a", "2")]))).toThrow(
      /repeated/,
    );
    expect(decodeLabelsExtension(encodeSequence([label("a", "1"), label("b", "2")]))).toHaveLength(2);
  });

  it("finds the extension by its exact OID bytes and reads criticality", () => {
    const ext = labelsExtensionDer([{ key: "app", value: "api", provenance: "static" }]);
    const match = matchLabelsExtension(ext);
    expect(match?.critical).toBe(false);
    expect(decodeLabelsExtension(match?.value as Buffer)).toEqual([
      { key: "app", value: "api", provenance: "static" },
    ]);
    const other = Buffer.concat([hex("3009 0603551d11 04023000")]);
    expect(matchLabelsExtension(other)).toBeNull();
  });

  it("encodes large OID arcs exactly", () => {
    expect(encodeOidContent("2.25.4294967296")).toEqual(hex("699080808000"));
    expect(encodeOidContent("1.2.840.10045.4.3.2")).toEqual(hex("2a8648ce3d040302"));
    expect(() => encodeOidContent("3.1")).toThrow(/not valid/);
  });
});
