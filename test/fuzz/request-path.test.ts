/**
 * Request-path normalization: a path policy allows under a prefix (`/api/**`) must stay under that
 * prefix however the application reads the target the sidecar forwards: WHATWG URL parsing, then
 * percent-decoding, then dot segments resolved with `/` or `\` as separators (what a server that
 * decodes before it resolves, or runs on Windows, does). And the forwarded target must read back as
 * exactly the path policy decided on.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { normalizeRequestPath } from "../../core/policy/path.ts";
import { PathMatcher } from "../../core/policy/path-pattern.ts";
import { corpus, fuzz, mutatedBytes } from "./fuzz.ts";

const PREFIX = "/api";
const allowed = new PathMatcher([`${PREFIX}/**`]);

const PIECES = [
  "/",
  "api",
  "apix",
  "admin",
  ".",
  "..",
  "%2e",
  "%2E",
  "%2f",
  "%2F",
  "%5c",
  "%25",
  "%",
  "%00",
  "%c0%ae",
  ";",
  ";a=b",
  "?",
  "#",
  "//",
  "\\",
  "http://a.test",
  "a",
  " ",
  "%20",
  "~",
];

/** The path an application resolves from a target: URL-parsed, decoded, dot segments removed. */
function applicationPath(target: string): string {
  const decoded = decodeURIComponent(new URL(target, "http://app.test").pathname);
  const out: string[] = [];
  for (const segment of decoded.split(/[/\\]/).slice(1)) {
    if (segment === "..") out.pop();
    else if (segment !== ".") out.push(segment);
  }
  return `/${out.join("/")}`;
}

const within = (path: string): boolean => path === PREFIX || path.startsWith(`${PREFIX}/`);

describe("fuzz: request-path normalization", () => {
  it("never lets a target policy allowed under a prefix reach the application outside it", async () => {
    const seeds = corpus("request-path");
    const built = fc
      .tuple(
        fc.constantFrom("/api/", "/", "http://a.test/api/", ""),
        fc.array(fc.constantFrom(...PIECES), { maxLength: 12 }),
      )
      .map(([start, pieces]) => start + pieces.join(""));
    const targets = fc.oneof(
      built,
      mutatedBytes(seeds, PIECES).map((b) => b.toString("latin1")),
    );
    const { runs } = await fuzz(
      "request-path",
      seeds.map((s) => s.toString("latin1")),
      targets,
      (raw) => {
        const n = normalizeRequestPath(raw);
        if (!n.ok) {
          expect(n.reason).not.toBe("");
          return;
        }
        if (n.path === "*") return;
        expect(n.forwardTarget.startsWith("/") && !n.forwardTarget.startsWith("//")).toBe(true);
        const seen = applicationPath(n.forwardTarget);
        expect(seen).toBe(n.path.replaceAll("\\", "/"));
        if (allowed.matches(n.path)) expect(within(seen), `${raw} → ${seen}`).toBe(true);
      },
    );
    expect(runs).toBeGreaterThan(seeds.length);
  });
});
