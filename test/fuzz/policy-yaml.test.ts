/**
 * The policy YAML parser (policy files, the policy store's watch directory, `sigil policy`): any text
 * parses to documents or to errors that name the file, a line and a reason; it never throws, and a
 * document it accepts survives being written back and parsed again unchanged.
 */
import { describe, expect, it } from "vitest";
import { parsePolicyDocuments, stringifyPolicyDocuments } from "../../core/policy/parse.ts";
import { corpus, fuzz, mutatedBytes } from "./fuzz.ts";

const FILE = "fuzz.yaml";
const DICTIONARY = [
  "\n",
  ": ",
  "- ",
  "  ",
  "{",
  "}",
  "[",
  "]",
  "&a ",
  "*a",
  "<<: ",
  "!!binary ",
  "---\n",
  '"',
  "'",
  "#",
  "\t",
  "ports: [80]",
  "action: deny",
  "matchLabels: {}",
  "paths: ['/x']",
];

describe("fuzz: policy YAML", () => {
  it("parses any text to documents or to located errors, and round-trips what it accepts", async () => {
    const seeds = corpus("policy-yaml");
    const { runs } = await fuzz("policy-yaml", seeds, mutatedBytes(seeds, DICTIONARY), (input) => {
      const text = input.toString("utf8");
      const parsed = parsePolicyDocuments(text, FILE);
      if (!parsed.ok) {
        expect(parsed.errors.length).toBeGreaterThan(0);
        for (const e of parsed.errors) {
          expect(e.file).toBe(FILE);
          expect(e.line).toBeGreaterThanOrEqual(1);
          expect(e.message).not.toBe("");
        }
        return;
      }
      const documents = parsed.documents.map((d) => d.document);
      const again = parsePolicyDocuments(stringifyPolicyDocuments(documents), FILE);
      expect(again.ok && again.documents.map((d) => d.document)).toEqual(documents);
    });
    expect(runs).toBeGreaterThan(seeds.length);
  });
});
