import { SignInLimit } from "../../controlplane/http/sign-in-limit.ts";
import * as crypto from "node:crypto";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { HttpAuth, registerSessionRoutes } from "../../controlplane/http/auth.ts";
import { Router, sendJson } from "../../controlplane/http/router.ts";

vi.mock("node:crypto", async (importOriginal) => {
  const real = await importOriginal<typeof crypto>();
  return { ...real, timingSafeEqual: vi.fn(real.timingSafeEqual) };
});

const TOKEN = "t".repeat(43);
let clock = 1_000_000;
let auth: HttpAuth;
let server: Server;
let base: string;

beforeAll(async () => {
  auth = new HttpAuth({ token: TOKEN, sessionTtlMs: 60_000, maxSessions: 3, now: () => clock });
  const router = new Router(auth.guard);
  registerSessionRoutes(router, auth, { secure: false, limit: new SignInLimit({ attempts: 1000 }) });
  router.add("GET", "/api/thing", (_req, res) => sendJson(res, 200, { ok: true }));
  server = createServer((req, res) => void router.handle(req, res));
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(() => {
  auth.close();
  return new Promise<void>((r) => server.close(() => r()));
});

async function signIn(): Promise<string> {
  const res = await fetch(`${base}/api/session`, {
    method: "POST",
    headers: { "x-sigil-request": "1", "content-type": "application/json" },
    body: JSON.stringify({ token: TOKEN }),
  });
  expect(res.status).toBe(200);
  return (res.headers.get("set-cookie") ?? "").split(";")[0] as string;
}

const thing = (headers: Record<string, string>) => fetch(`${base}/api/thing`, { headers });

describe("HTTP API authentication", () => {
  it("compares bearer and sign-in tokens in constant time, over fixed-length digests", async () => {
    const start = vi.mocked(crypto.timingSafeEqual).mock.calls.length;
    expect((await thing({ authorization: `Bearer ${TOKEN}` })).status).toBe(200);
    expect((await thing({ authorization: "Bearer x" })).status).toBe(401);
    await signIn();
    const calls = vi.mocked(crypto.timingSafeEqual).mock.calls.slice(start);
    expect(calls).toHaveLength(3);
    for (const [a, b] of calls) {
      expect((a as Buffer).length).toBe(32);
      expect((b as Buffer).length).toBe(32);
    }
  });

  it("accepts the bearer scheme case-insensitively and nothing looser", async () => {
    expect((await thing({ authorization: `bearer ${TOKEN}` })).status).toBe(200);
    expect((await thing({ authorization: `Bearer ${TOKEN} extra` })).status).toBe(401);
    expect((await thing({ authorization: TOKEN })).status).toBe(401);
  });

  it("refuses an expired session and forgets it", async () => {
    const cookie = await signIn();
    expect((await thing({ cookie })).status).toBe(200);
    clock += 60_000;
    const res = await thing({ cookie });
    expect(res.status).toBe(401);
    expect(((await res.json()) as { error: string }).error).toMatch(/session expired/);
    clock -= 60_000;
    const again = await thing({ cookie });
    expect(((await again.json()) as { error: string }).error).toMatch(/unknown or signed out/);
  });

  it("keeps a bounded number of sessions, signing out the oldest", async () => {
    const first = await signIn();
    const rest = [await signIn(), await signIn(), await signIn()];
    expect((await thing({ cookie: first })).status).toBe(401);
    for (const cookie of rest) expect((await thing({ cookie })).status).toBe(200);
  });
});
