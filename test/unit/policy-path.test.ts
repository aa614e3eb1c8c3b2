import { describe, expect, it } from "vitest";
import { normalizeRequestPath } from "../../core/policy/index.ts";

describe("normalizeRequestPath", () => {
  it.each([
    ["/", { path: "/", query: "", forwardTarget: "/" }],
    ["/a/b?x=1&y=%2F#frag", { path: "/a/b", query: "?x=1&y=%2F", forwardTarget: "/a/b?x=1&y=%2F" }],
    ["/a//b///c/", { path: "/a/b/c/", query: "", forwardTarget: "/a/b/c/" }],
    ["/a/b/./c/../d", { path: "/a/b/d", query: "", forwardTarget: "/a/b/d" }],
    ["/a/b/..", { path: "/a/", query: "", forwardTarget: "/a/" }],
    ["/../../a", { path: "/a", query: "", forwardTarget: "/a" }],
    ["/%7Euser/caf%C3%A9", { path: "/~user/café", query: "", forwardTarget: "/~user/caf%C3%A9" }],
    ["/a%20b/%3F%23%25", { path: "/a b/?#%", query: "", forwardTarget: "/a%20b/%3F%23%25" }],
    ["/a%252fb", { path: "/a%2fb", query: "", forwardTarget: "/a%252fb" }],
    ["*", { path: "*", query: "", forwardTarget: "*" }],
  ])("%j", (raw, expected) => {
    expect(normalizeRequestPath(raw)).toEqual({ ok: true, ...expected });
  });

  it("keeps the authority of absolute-form targets", () => {
    expect(normalizeRequestPath("http://API.local:8080/x/../y?q")).toEqual({
      ok: true,
      path: "/y",
      authority: "API.local:8080",
      query: "?q",
      forwardTarget: "/y?q",
    });
    expect(normalizeRequestPath("https://h?q")).toMatchObject({ ok: true, path: "/", query: "?q" });
  });

  it("gives the ;-stripped reading only when it differs", () => {
    expect(normalizeRequestPath("/a;v=1/b;c/..;/d")).toMatchObject({
      ok: true,
      path: "/a;v=1/b;c/..;/d",
      withoutParams: "/a/d",
    });
    expect(normalizeRequestPath("/a;/b")).toMatchObject({ path: "/a;/b", withoutParams: "/a/b" });
    expect(normalizeRequestPath("/a/b")).not.toHaveProperty("withoutParams");
  });

  it.each([
    ["/a%2Fb", /encoded slash/],
    ["/a%5cb", /encoded backslash/],
    ["/a%00", /NUL/],
    ["/a%1b", /control/],
    ["/a%7F", /control/],
    ["/a%g0", /invalid percent-encoding at offset 2/],
    ["/a%c3", /not valid UTF-8/],
    ["/a%ed%a0%80", /not valid UTF-8/],
    ["/a\\b", /backslash at offset 2/],
    ["/a\u0000b", /control/],
    ["/a b", /space/],
    ["//host/path", /starts with \/\//],
    ["host/path", /neither origin-form/],
    ["javascript://x/y", /unsupported scheme "javascript"/],
  ])("rejects %j", (raw, reason) => {
    const r = normalizeRequestPath(raw);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.reason).toMatch(reason);
  });
});
