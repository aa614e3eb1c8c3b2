import { createServer, request, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { HttpError, Router, sendJson } from "../../controlplane/http/router.ts";

/** Sends a raw request target that a URL-building client would refuse to send. */
function rawGet(
  port: number,
  target: string,
  headers: Record<string, string> = { "x-test-auth": "yes" },
  method = "GET",
): Promise<{ status: number; body: string; challenge?: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: "127.0.0.1", port, path: target, method, headers }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => (body += c));
      res.on("end", () =>
        resolve({ status: res.statusCode ?? 0, body, challenge: res.headers["www-authenticate"] }),
      );
    });
    req.on("error", reject);
    req.end();
  });
}

describe("control plane HTTP router", () => {
  let server: Server;
  let port: number;

  beforeAll(async () => {
    const router = new Router((req) => {
      if (req.headers["x-test-auth"] !== "yes")
        throw new HttpError(401, "who are you", { "www-authenticate": "Test" });
    });
    router.add("GET", "/api/items/:id", (_req, res, params) => sendJson(res, 200, { id: params.id }));
    router.addPublic("GET", "/open", (_req, res) => sendJson(res, 200, { open: true }));
    server = createServer((req, res) => void router.handle(req, res));
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    port = (server.address() as AddressInfo).port;
  });
  afterAll(() => new Promise<void>((r) => server.close(() => r())));

  it("decodes route parameters", async () => {
    const res = await rawGet(port, "/api/items/a%20b");
    expect(res.status).toBe(200);
    expect(JSON.parse(res.body)).toEqual({ id: "a b" });
  });

  it.each(["//", "//a:b@", "//[::1"])(
    "answers 400 to the malformed target %s and keeps serving",
    async (t) => {
      const res = await rawGet(port, t);
      expect(res.status).toBe(400);
      expect(JSON.parse(res.body).error).toMatch(/malformed request target/);
      expect((await rawGet(port, "/api/items/1")).status).toBe(200);
    },
  );

  it("answers 400 to invalid percent-encoding in a route parameter", async () => {
    const res = await rawGet(port, "/api/items/%E0%A4%A");
    expect(res.status).toBe(400);
    expect(JSON.parse(res.body).error).toMatch(/percent-encoding/);
  });

  it("names unknown routes and wrong methods", async () => {
    expect((await rawGet(port, "/nope")).status).toBe(404);
    expect((await rawGet(port, "/open", undefined, "POST")).status).toBe(405);
  });

  it("runs the guard before every route not registered public, and before saying a route is missing", async () => {
    const refused = await rawGet(port, "/api/items/1", {});
    expect(refused).toMatchObject({ status: 401, challenge: "Test" });
    expect(JSON.parse(refused.body)).toEqual({ error: "who are you" });
    expect((await rawGet(port, "/nope", {})).status).toBe(401);
    expect((await rawGet(port, "/open", {}, "POST")).status).toBe(401);
    expect((await rawGet(port, "/open", {})).status).toBe(200);
  });

  it("lists its routes with their access", () => {
    const router = new Router(() => undefined);
    router.add("put", "/api/a/:id", () => undefined);
    router.addPublic("GET", "/", () => undefined);
    expect(router.routes()).toEqual([
      { method: "PUT", pattern: "/api/a/:id", public: false },
      { method: "GET", pattern: "/", public: true },
    ]);
  });
});
