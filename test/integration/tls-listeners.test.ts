import type { IncomingHttpHeaders } from "node:http";
import https from "node:https";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startGrpcServer } from "../../controlplane/grpc-server.ts";
import { createSelfSignedServingCert } from "../support/serving-cert.ts";
import { startTestControlPlane, type TestControlPlane } from "../support/control-plane.ts";
import { probeTls, type ProbeVersion } from "../support/tls-probe.ts";

/**
 * Every TLS listener the control plane opens offers TLS 1.3, and TLS 1.2 only with ECDHE and AEAD
 * suites (what Envoy and older gRPC clients still need). A scanner offering CBC (LUCKY13), static RSA
 * key exchange or TLS 1.0/1.1 is refused, also after the serving material is replaced at run time.
 */

let plane: TestControlPlane;

beforeAll(async () => {
  plane = await startTestControlPlane("sg-tls-", {}, undefined, {
    http: { tls: "sigil", signInAttemptsPerMinute: 3 },
  });
}, 30_000);
afterAll(async () => plane?.close());

interface Listener {
  readonly name: string;
  readonly port: () => number;
}

const listeners: Listener[] = [
  { name: "gRPC (xDS, identity, flows)", port: () => plane.cp.grpc.port },
  { name: "HTTP API and UI", port: () => plane.cp.httpPort },
];

const refused: [string, ProbeVersion, string | undefined][] = [
  ["TLS 1.2 with a CBC suite (AES128-SHA256)", "tls1_2", "AES128-SHA256"],
  ["TLS 1.2 with ECDHE and CBC (ECDHE-ECDSA-AES128-SHA256)", "tls1_2", "ECDHE-ECDSA-AES128-SHA256"],
  ["TLS 1.2 with ECDHE and CBC-SHA1 (ECDHE-ECDSA-AES256-SHA)", "tls1_2", "ECDHE-ECDSA-AES256-SHA"],
  ["TLS 1.1", "tls1_1", undefined],
  ["TLS 1.0", "tls1", undefined],
];

describe.each(listeners)("control plane $name listener", ({ port }) => {
  it("negotiates TLS 1.3", async () => {
    const result = await probeTls("127.0.0.1", port(), "tls1_3");
    expect(result.protocol, result.output).toBe("TLSv1.3");
  });

  it("negotiates TLS 1.2 with an ECDHE AEAD suite for clients that need it", async () => {
    const result = await probeTls("127.0.0.1", port(), "tls1_2", "ECDHE-ECDSA-AES128-GCM-SHA256");
    expect(result.protocol, result.output).toBe("TLSv1.2");
    expect(result.cipher).toBe("ECDHE-ECDSA-AES128-GCM-SHA256");
  });

  it.each(refused)("refuses %s", async (_name, version, cipher) => {
    const result = await probeTls("127.0.0.1", port(), version, cipher);
    expect(result.protocol, result.output).toBeNull();
  });
});

describe("after the serving certificate is replaced at run time", () => {
  it("the gRPC listener still refuses CBC suites and TLS 1.1", async () => {
    const server = await startGrpcServer({
      host: "127.0.0.1",
      port: 0,
      tls: await createSelfSignedServingCert(["localhost"]),
    });
    try {
      server.updateTls(await createSelfSignedServingCert(["localhost"]));
      const cbc = await probeTls("127.0.0.1", server.port, "tls1_2", "ECDHE-ECDSA-AES128-SHA256");
      expect(cbc.protocol, cbc.output).toBeNull();
      const old = await probeTls("127.0.0.1", server.port, "tls1_1");
      expect(old.protocol, old.output).toBeNull();
      const good = await probeTls("127.0.0.1", server.port, "tls1_3");
      expect(good.protocol, good.output).toBe("TLSv1.3");
    } finally {
      await server.close(0);
    }
  });
});

/** One request to the HTTPS API, trusting only the control plane's CA bundle. */
function apiRequest(
  method: string,
  path: string,
  headers: Record<string, string>,
  body?: string,
): Promise<{ status: number; headers: IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      {
        host: "127.0.0.1",
        port: plane.cp.httpPort,
        method,
        path,
        headers,
        ca: plane.caPem,
        servername: "localhost",
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: Buffer.concat(chunks).toString(),
          }),
        );
      },
    );
    req.on("error", reject);
    req.end(body);
  });
}

describe("the HTTP API over TLS", () => {
  it("serves the API with a certificate from Sigil's CA, and nothing in plain HTTP", async () => {
    const res = await apiRequest("GET", "/api/session", {
      authorization: `Bearer ${plane.cp.httpAuth.token}`,
    });
    expect(res.status).toBe(200);
    const plain = await fetch(`http://127.0.0.1:${plane.cp.httpPort}/api/session`, {
      headers: { authorization: `Bearer ${plane.cp.httpAuth.token}` },
    }).then(
      (r) => r.status,
      () => "refused",
    );
    expect(plain).not.toBe(200);
  });

  it("marks the session cookie Secure", async () => {
    const res = await apiRequest(
      "POST",
      "/api/session",
      { "x-sigil-request": "1", "content-type": "application/json" },
      JSON.stringify({ token: plane.cp.httpAuth.token }),
    );
    expect(res.status).toBe(200);
    expect(String(res.headers["set-cookie"])).toMatch(/; Secure/);
  });

  it("answers 429 with Retry-After past the sign-in attempts allowed per source", async () => {
    const attempt = () =>
      apiRequest(
        "POST",
        "/api/session",
        { "x-sigil-request": "1", "content-type": "application/json" },
        JSON.stringify({ token: "guess" }),
      );
    // The earlier test used one attempt of this minute's three.
    expect((await attempt()).status).toBe(401);
    expect((await attempt()).status).toBe(401);
    const limited = await attempt();
    expect(limited.status).toBe(429);
    expect(Number(limited.headers["retry-after"])).toBeGreaterThan(0);
  });
});
