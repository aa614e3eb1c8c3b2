import { describe, expect, it } from "vitest";
import { evaluate, normalizeRequestPath } from "../../core/policy/index.ts";
import type { Decision } from "../../core/policy/index.ts";
import { setFrom, workload } from "./policy-helpers.ts";

/**
 * Path-normalization evasions: every way of spelling a forbidden path must be denied or rejected, and
 * whatever is allowed must be allowed under every way a server might read the target.
 */

const set = setFrom(`
apiVersion: sigil.dev/v1
kind: AuthorizationPolicy
metadata: { name: api }
spec:
  selector: { matchLabels: { app: api } }
  ingress:
    - action: allow
      from: [{ matchLabels: { app: web } }]
      http: { methods: [GET], paths: ["/public/**", "/files/*", "/api/**"] }
    - action: deny
      http: { paths: ["/api/admin/**"] }
    - action: deny
      http: { methods: [DELETE] }
`);

function check(target: string, method = "GET"): Decision {
  return evaluate(set, {
    direction: "ingress",
    local: { labels: { app: "api" } },
    peer: workload({ app: "web" }),
    port: 8080,
    http: { method, path: target, host: "api.local", headers: {} },
    mode: "enforce",
  });
}

/** Independent model of the policy's intent: the forbidden region, over non-empty segments. */
function forbidden(path: string): boolean {
  const s = path.split("/").filter((x) => x !== "");
  if (s[0] === "api") return s[1] === "admin";
  if (s[0] === "public") return false;
  if (s[0] === "files") return s.length !== 2;
  return true;
}

const ATTACKS: [string, "deny" | 400][] = [
  // encoded slashes and backslashes, both letter cases
  ["/api/admin%2fusers", 400],
  ["/api/admin%2Fusers", 400],
  ["/api%2fadmin/users", 400],
  ["/api%2Fadmin%2Fusers", 400],
  ["/api/admin%5cusers", 400],
  ["/api/admin%5Cusers", 400],
  ["/api\\admin\\users", 400],
  // overlong UTF-8 encodings of "/" and "."
  ["/api/admin%c0%afusers", 400],
  ["/api/%e0%80%afadmin", 400],
  ["/api/%c0%ae%c0%ae/admin", 400],
  // NUL and other controls
  ["/api/admin%00.json", 400],
  ["/api/admin/x%00", 400],
  ["/api/admin%0d%0a", 400],
  ["/api/admin/x\t", 400],
  ["/api/admin x", 400],
  ["/api/ädmin", 400],
  // invalid percent-encoding
  ["/api/%zzadmin", 400],
  ["/api/admin%2", 400],
  ["/api/admin/%", 400],
  // dot segments, plain and encoded (mixed case)
  ["/api/./admin/users", "deny"],
  ["/api/x/../admin/users", "deny"],
  ["/api/%2e/admin/users", "deny"],
  ["/api/x/%2e%2e/admin", "deny"],
  ["/api/x/%2E%2e/admin", "deny"],
  ["/api/x/.%2E/admin", "deny"],
  ["/public/../api/admin/x", "deny"],
  ["/public/%2e%2e/secret", "deny"],
  ["/public/../../../../secret", "deny"],
  ["/files/a/..", "deny"],
  // double slashes
  ["//api//admin//users", 400],
  ["//api/public", 400],
  ["/api//admin", "deny"],
  ["/public//..//secret", "deny"],
  // percent-encoded letters
  ["/api/%61dmin/users", "deny"],
  ["/api/%61%64%6D%69%6E", "deny"],
  // ; path parameters (servlet containers strip them)
  ["/api/admin;jsessionid=1/users", "deny"],
  ["/api/admin;/users", "deny"],
  ["/public/..;/api/admin", "deny"],
  ["/public/..;x=1/secret", "deny"],
  ["/api;x/admin", "deny"],
  ["/public;x/../secret", "deny"],
  // absolute-form targets
  ["http://api.local/api/admin/users", "deny"],
  ["HTTP://api.local/api/admin", "deny"],
  ["https://user@api.local:8080/api/admin", "deny"],
  ["http://api.local//api/./admin", 400],
  ["http://api.local/api//./admin", "deny"],
  ["http://api.local", "deny"],
  ["ftp://api.local/api/x", 400],
  ["gopher://api.local/api/x", 400],
  ["http:///api/x", 400],
  // not origin-form
  ["api/admin", 400],
  ["api.local:443", 400],
  ["", 400],
  // query and fragment never count as path
  ["/api/admin/x?/public/y", "deny"],
  ["/secret?/api/x", "deny"],
  ["/api/admin#/../../public", "deny"],
];

describe("path evasion", () => {
  it.each(ATTACKS)("%j → %s", (target, expected) => {
    const d = check(target);
    expect(d.verdict).toBe("deny");
    if (expected === 400) expect(d.status).toBe(400);
    else expect(d.status).toBeUndefined();
  });

  it("legitimate spellings are still allowed", () => {
    for (const target of [
      "/api/users",
      "/api/users/",
      "/api/users?admin=1",
      "/api/%75sers",
      "/public/a%20b",
      "/public/%E2%9C%93",
      "/files/a;b",
      "http://api.local/api/users",
      "/api/adminx",
    ]) {
      expect(check(target), target).toMatchObject({ verdict: "allow", policy: "api/ingress/0" });
    }
  });

  it("method case: a deny matches any case, an allow only the exact method", () => {
    expect(check("/api/x", "DELETE").policy).toBe("api/ingress/2");
    expect(check("/api/x", "delete").policy).toBe("api/ingress/2");
    expect(check("/api/x", "Delete").policy).toBe("api/ingress/2");
    expect(check("/api/x", "get")).toMatchObject({ verdict: "deny", policy: null });
  });

  it("observe mode still rejects malformed paths", () => {
    const d = evaluate(set, {
      direction: "ingress",
      local: { labels: { app: "api" } },
      peer: workload({ app: "web" }),
      port: 8080,
      http: { method: "GET", path: "/api/admin%2fx", headers: {} },
      mode: "observe",
    });
    expect(d).toMatchObject({ verdict: "deny", status: 400, wouldDeny: false });
  });
});

/** How different servers read a target; null = that server would reject it. */
function serverReadings(raw: string): string[] {
  let target = raw.replace(/[?#].*$/s, "");
  const abs = /^https?:\/\/[^/]*/i.exec(target);
  if (abs) target = target.slice(abs[0].length) || "/";
  const out: string[] = [];
  const tryDecode = (s: string): string | null => {
    try {
      return decodeURIComponent(s);
    } catch {
      return null;
    }
  };
  const resolve = (segs: string[], merge: boolean): string => {
    const stack: string[] = [];
    for (const s of segs) {
      if (s === "." || (merge && s === "")) continue;
      if (s === "..") stack.pop();
      else stack.push(s);
    }
    return "/" + stack.join("/");
  };
  // WHATWG URL parser (dot segments incl. %2e, no slash merging), then per-segment decoding
  try {
    const url = new URL(target, "http://h");
    const decoded = url.pathname.split("/").map(tryDecode);
    if (decoded.every((d) => d !== null)) out.push(decoded.join("/"));
  } catch {
    // the URL parser rejected it: that reading reaches nothing
  }
  // decode, merge slashes, resolve dots, `;` literal (reverse proxies, static file servers)
  const whole = tryDecode(target);
  if (whole !== null) {
    out.push(resolve(whole.split("/"), true));
  }
  // servlet style: strip ;params from raw segments, decode, resolve
  const servlet = target.split("/").map((s) => tryDecode(s.replace(/;.*$/s, "")));
  if (servlet.every((s) => s !== null)) out.push(resolve(servlet as string[], true));
  return out;
}

function lcg(seed: number): () => number {
  let x = seed >>> 0;
  return () => {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    return x / 2 ** 32;
  };
}

const PIECES = [
  "/",
  "/",
  "/",
  "api",
  "admin",
  "public",
  "files",
  "x",
  ".",
  "..",
  "%2e",
  "%2E%2e",
  ".%2e",
  "%2f",
  "%2F",
  "%5c",
  ";",
  ";x=1",
  "//",
  "%61dmin",
  "%61",
  "%00",
  "?",
  "#",
  "%",
  "%z",
  "%25",
  "%252f",
  "%c0%af",
  "\\",
  "A",
  "secret",
  "http://h",
  "HTTP://h/",
];

const STARTS = ["", "/", "/api/", "/public/", "/files/", "/api/admin", "http://h/api/"];

describe("no generated request reaches a forbidden path", () => {
  it("holds for 20000 generated targets under every server reading", () => {
    const rnd = lcg(0x5eed);
    let allowed = 0;
    let rejected = 0;
    for (let i = 0; i < 20_000; i++) {
      const n = 1 + Math.floor(rnd() * 9);
      let target = STARTS[Math.floor(rnd() * STARTS.length)] as string;
      for (let j = 0; j < n; j++) target += PIECES[Math.floor(rnd() * PIECES.length)];
      const d = check(target);
      if (d.status === 400) rejected++;
      if (d.verdict !== "allow") continue;
      allowed++;
      for (const reading of serverReadings(target)) {
        expect(forbidden(reading), `${target} read as ${reading}`).toBe(false);
      }
    }
    // the generator must exercise both outcomes for the property to mean anything
    expect(allowed).toBeGreaterThan(2000);
    expect(rejected).toBeGreaterThan(2000);
  });

  it("the forward target of an allowed request names exactly the authorized path", () => {
    const rnd = lcg(42);
    for (let i = 0; i < 5_000; i++) {
      let target = "/";
      for (let j = 0; j < 6; j++) target += PIECES[Math.floor(rnd() * PIECES.length)];
      const n = normalizeRequestPath(target);
      if (!n.ok) continue;
      const forward = normalizeRequestPath(n.forwardTarget);
      expect(forward.ok && forward.path, target).toBe(n.path);
      const pathPart = n.forwardTarget.replace(/\?.*$/s, "");
      if (n.path !== "*") expect(new URL(pathPart, "http://h").pathname, target).toBe(pathPart);
    }
  });
});
