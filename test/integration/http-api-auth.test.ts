import { chmod, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { request } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startControlPlane, type ControlPlane } from "../../controlplane/control-plane.ts";
import { AdminTokenError, loadAdminToken } from "../../controlplane/http/admin-token.ts";
import { startTestControlPlane } from "../support/control-plane.ts";
import type { TestControlPlane } from "../support/control-plane.ts";

/** The only routes anyone who can connect may reach: health, sign-in and the static UI shell (its modules). */
const PUBLIC_ROUTES = [
  "GET /",
  "GET /healthz",
  "GET /api/version",
  "GET /ui/app.js",
  "GET /ui/api.js",
  "GET /ui/details.js",
  "GET /ui/dom.js",
  "GET /ui/flows.js",
  "GET /ui/graph.js",
  "GET /ui/graph-labels.js",
  "GET /ui/graph-style.js",
  "GET /ui/panels.js",
  "GET /ui/partial.js",
  "GET /ui/state.js",
  "GET /ui/suggest.js",
  "GET /ui/style.css",
  "GET /ui/vendor/cytoscape.min.js",
  "POST /api/session",
];

let controlPlane: TestControlPlane;
let dataDir: string;
let cp: ControlPlane;
let base: string;

beforeAll(async () => {
  controlPlane = await startTestControlPlane("sg-auth-", {});
  ({ cp, dataDir } = controlPlane);
  base = `http://127.0.0.1:${cp.httpPort}`;
});

afterAll(async () => {
  await controlPlane?.close();
});

interface Answer {
  status: number;
  headers: Headers;
  body: Record<string, unknown>;
}

async function call(
  method: string,
  path: string,
  headers: Record<string, string> = {},
  body?: unknown,
): Promise<Answer> {
  const res = await fetch(`${base}${path}`, {
    method,
    headers: body === undefined ? headers : { "content-type": "application/json", ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
    redirect: "manual",
  });
  const text = await res.text();
  return { status: res.status, headers: res.headers, body: text.startsWith("{") ? JSON.parse(text) : {} };
}

/** A concrete path for a route pattern (`:id` parameters filled in). */
function concrete(pattern: string): string {
  return pattern.replace(/:[^/]+/g, "x");
}

async function signIn(): Promise<string> {
  const res = await call("POST", "/api/session", { "x-sigil-request": "1" }, { token: cp.httpAuth.token });
  expect(res.status).toBe(200);
  const cookie = res.headers.get("set-cookie") ?? "";
  expect(cookie).toMatch(/^sigil_session=[A-Za-z0-9_-]{43}; /);
  expect(cookie).toMatch(/; HttpOnly/);
  expect(cookie).toMatch(/; SameSite=Strict/);
  expect(cookie).toMatch(/; Path=\//);
  expect(cookie).toMatch(/; Max-Age=43200/);
  return cookie.split(";")[0] as string;
}

function expectUnauthorized(res: Answer, what: string): void {
  expect(res.status, what).toBe(401);
  expect(res.headers.get("www-authenticate"), what).toMatch(/^Bearer /);
  expect(typeof res.body.error, what).toBe("string");
}

describe("control plane admin token", () => {
  it("is created at start: 256 random bits, mode 0600, in the data directory", async () => {
    expect(cp.httpAuth.tokenFile).toBe(join(dataDir, "http-token"));
    const info = await stat(cp.httpAuth.tokenFile);
    expect(info.mode & 0o777).toBe(0o600);
    expect((await readFile(cp.httpAuth.tokenFile, "utf8")).trim()).toBe(cp.httpAuth.token);
    expect(cp.httpAuth.token).toMatch(/^[A-Za-z0-9_-]{43}$/);
  });

  it("is reused on the next start, and concurrent creators agree on one token", async () => {
    const dir = await mkdtemp(join(tmpdir(), "sg-auth-tok-"));
    try {
      const file = join(dir, "state", "http-token");
      const tokens = await Promise.all(Array.from({ length: 8 }, () => loadAdminToken(file, true)));
      expect(new Set(tokens).size).toBe(1);
      expect(await loadAdminToken(file, true)).toBe(tokens[0]);
      expect((await stat(file)).mode & 0o777).toBe(0o600);
      expect((await stat(join(dir, "state"))).mode & 0o777).toBe(0o700);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("refuses an operator's file that is missing, readable by others, or not a usable token", async () => {
    const dir = await mkdtemp(join(tmpdir(), "sg-auth-op-"));
    try {
      const file = join(dir, "token");
      await expect(loadAdminToken(file, false)).rejects.toThrow(AdminTokenError);
      await expect(loadAdminToken(file, false)).rejects.toThrow(/token: ENOENT/);
      await writeFile(file, `${"a".repeat(40)}\n`, { mode: 0o644 });
      await chmod(file, 0o644);
      await expect(loadAdminToken(file, false)).rejects.toThrow(
        /accessible to other users \(mode 644\); chmod 600/,
      );
      await chmod(file, 0o600);
      expect(await loadAdminToken(file, false)).toBe("a".repeat(40));
      await writeFile(file, "short\n");
      await expect(loadAdminToken(file, false)).rejects.toThrow(/does not hold a usable token/);
      await writeFile(file, `${"a".repeat(20)} ${"b".repeat(20)}\n`);
      await expect(loadAdminToken(file, false)).rejects.toThrow(/does not hold a usable token/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("an operator's token file replaces the generated one", async () => {
    const dir = await mkdtemp(join(tmpdir(), "sg-auth-own-"));
    const own = `own-${"k".repeat(40)}`;
    const file = join(dir, "operator-token");
    await writeFile(file, `${own}\n`, { mode: 0o600 });
    const other = await startControlPlane({
      dataDir: join(dir, "data"),
      grpc: { host: "127.0.0.1", port: 0 },
      xdsPlaintext: undefined,
      http: { host: "127.0.0.1", port: 0, tokenFile: file },
      serverNames: ["localhost"],
      log: pino({ level: "silent" }),
    });
    try {
      const url = `http://127.0.0.1:${other.httpPort}/api/mode`;
      expect((await fetch(url, { headers: { authorization: `Bearer ${own}` } })).status).toBe(200);
      expect((await fetch(url, { headers: { authorization: `Bearer ${cp.httpAuth.token}` } })).status).toBe(
        401,
      );
      await expect(stat(join(dir, "data", "http-token"))).rejects.toThrow(/ENOENT/);
    } finally {
      await other.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("control plane HTTP API authentication", () => {
  it("leaves only health, version, sign-in and the static UI shell public", () => {
    const open = cp.router
      .routes()
      .filter((r) => r.public)
      .map((r) => `${r.method} ${r.pattern}`)
      .sort();
    expect(open).toEqual([...PUBLIC_ROUTES].sort());
    expect(cp.router.routes().filter((r) => !r.public).length).toBeGreaterThan(10);
  });

  it("answers 401 with a Bearer challenge to every protected route without a valid credential", async () => {
    const old = await signIn();
    expect((await call("DELETE", "/api/session", { cookie: old, "x-sigil-request": "1" })).status).toBe(204);
    const attempts: [string, Record<string, string>][] = [
      ["no credentials", {}],
      ["a forged bearer token", { authorization: `Bearer ${"A".repeat(43)}` }],
      [
        "the token with one character changed",
        {
          authorization: `Bearer ${cp.httpAuth.token.slice(0, -1)}${cp.httpAuth.token.endsWith("A") ? "B" : "A"}`,
        },
      ],
      ["the token as a prefix", { authorization: `Bearer ${cp.httpAuth.token}x` }],
      [
        "another scheme",
        { authorization: `Basic ${Buffer.from(`admin:${cp.httpAuth.token}`).toString("base64")}` },
      ],
      ["an empty bearer", { authorization: "Bearer " }],
      ["a forged session cookie", { cookie: `sigil_session=${"A".repeat(43)}`, "x-sigil-request": "1" }],
      ["a signed-out session", { cookie: old, "x-sigil-request": "1" }],
      [
        "a valid cookie next to a forged bearer",
        { cookie: await signIn(), authorization: "Bearer forged", "x-sigil-request": "1" },
      ],
    ];
    for (const route of cp.router.routes().filter((r) => !r.public)) {
      for (const [what, headers] of attempts) {
        const res = await call(
          route.method,
          concrete(route.pattern),
          headers,
          route.method === "GET" ? undefined : {},
        );
        expectUnauthorized(res, `${route.method} ${route.pattern} with ${what}`);
      }
    }
  });

  it("authenticates before saying whether a route exists", async () => {
    expectUnauthorized(await call("GET", "/api/no-such-route"), "unknown path");
    expectUnauthorized(await call("POST", "/healthz"), "wrong method on a public path");
    expectUnauthorized(await call("GET", "/%2e%2e/api/mode"), "encoded dot segments");
    const admin = { authorization: `Bearer ${cp.httpAuth.token}` };
    expect((await call("GET", "/api/no-such-route", admin)).status).toBe(404);
  });

  it("changes nothing when refused: a mode switch without the token leaves enforcement as it was", async () => {
    const before = cp.modes.settings().mesh;
    const res = await call("PUT", "/api/mode", {}, { scope: "mesh", mode: "observe" });
    expect(res.status).toBe(401);
    expect(cp.modes.settings().mesh).toBe(before);
    const token = await call("POST", "/api/identity/tokens", {}, { name: "intruder", labels: { app: "x" } });
    expect(token.status).toBe(401);
    expect(token.body.token).toBeUndefined();
  });

  it("serves every route to the bearer token, mutating ones without any CSRF header", async () => {
    const admin = { authorization: `Bearer ${cp.httpAuth.token}` };
    expect((await call("GET", "/api/mode", admin)).status).toBe(200);
    expect((await call("GET", "/metrics", admin)).status).toBe(200);
    const created = await call("POST", "/api/identity/tokens", admin, {
      name: "orders",
      labels: { app: "orders" },
    });
    expect(created.status).toBe(201);
    expect(created.body.token).toMatch(/^sgjt_/);
    expect((await call("GET", "/api/session", admin)).body).toEqual({ via: "bearer" });
    expect((await call("GET", "/healthz")).status).toBe(200);
    expect((await call("GET", "/")).status).toBe(200);
  });

  it("sign-in needs the token and the request header; a session cookie then authenticates", async () => {
    expectUnauthorized(
      await call("POST", "/api/session", { "x-sigil-request": "1" }, { token: "A".repeat(43) }),
      "sign-in with a wrong token",
    );
    const noHeader = await call("POST", "/api/session", {}, { token: cp.httpAuth.token });
    expect(noHeader.status).toBe(403);
    expect(noHeader.headers.get("set-cookie")).toBeNull();
    expect((await call("POST", "/api/session", { "x-sigil-request": "1" }, { token: 42 })).status).toBe(400);
    const cookie = await signIn();
    const session = await call("GET", "/api/session", { cookie });
    expect(session.status).toBe(200);
    expect(session.body.via).toBe("session");
    expect(Date.parse(session.body.expiresAt as string) - Date.now()).toBeGreaterThan(11.9 * 3600 * 1000);
    expect((await call("GET", "/api/graph", { cookie })).status).toBe(200);
  });

  it("refuses a state change by cookie without X-Sigil-Request (403) and allows it with the header", async () => {
    const cookie = await signIn();
    const before = cp.modes.settings().mesh;
    for (const [method, path, body] of [
      ["PUT", "/api/mode", { scope: "mesh", mode: "observe" }],
      ["POST", "/api/identity/tokens", { name: "csrf", labels: { app: "csrf" } }],
      ["POST", "/api/identity/workloads/revoke", { spiffeId: "spiffe://sigil.local/workload/orders" }],
      ["DELETE", "/api/session", undefined],
    ] as const) {
      const res = await call(method, path, { cookie }, body);
      expect(res.status, `${method} ${path}`).toBe(403);
      expect(res.body.error).toMatch(/x-sigil-request: 1/);
    }
    expect(cp.modes.settings().mesh).toBe(before);
    const wrongValue = await call(
      "PUT",
      "/api/mode",
      { cookie, "x-sigil-request": "yes" },
      { scope: "mesh", mode: before },
    );
    expect(wrongValue.status).toBe(403);
    const ok = await call(
      "PUT",
      "/api/mode",
      { cookie, "x-sigil-request": "1" },
      { scope: "mesh", mode: before },
    );
    expect(ok.status).toBe(200);
  });

  it("signing out ends the session and its open event stream", async () => {
    const cookie = await signIn();
    const port = cp.httpPort;
    const ended = new Promise<{ status: number }>((resolve, reject) => {
      const req = request(
        { host: "127.0.0.1", port, path: "/api/flows?follow=1", headers: { cookie } },
        (res) => {
          res.once("data", () => {
            void call("DELETE", "/api/session", { cookie, "x-sigil-request": "1" }).then(
              (out) => expect(out.status).toBe(204),
              reject,
            );
          });
          res.on("error", () => resolve({ status: res.statusCode ?? 0 }));
          res.on("close", () => resolve({ status: res.statusCode ?? 0 }));
        },
      );
      req.on("error", reject);
      req.end();
    });
    expect((await ended).status).toBe(200);
    expectUnauthorized(await call("GET", "/api/graph", { cookie }), "after sign-out");
  });
});
