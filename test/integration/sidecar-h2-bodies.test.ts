import http2 from "node:http2";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { apiIngressPolicy } from "../support/api-ingress.ts";
import type { App } from "../support/sidecar-apps.ts";
import { startH2App } from "../support/sidecar-apps.ts";
import type { SidecarPair } from "../support/sidecar-mesh.ts";
import { policySet, startPair } from "../support/sidecar-mesh.ts";

/**
 * HTTP/2 stream bodies through a sidecar pair (client → A → mTLS → B → application): backpressure
 * across both hops, and an upload the application stops reading once it has answered in full.
 */

let h2App: App;
let pair: SidecarPair;

beforeAll(async () => {
  h2App = await startH2App();
  pair = await startPair({ appPorts: [h2App.port] });
  pair.b.policy.update({
    policies: policySet(apiIngressPolicy({ ports: [h2App.port], methods: ["POST"], paths: ["/api/**"] })),
  });
});

afterAll(async () => {
  await pair?.close();
  await h2App?.close();
});

describe("HTTP/2 stream bodies through a sidecar pair", () => {
  it("ends a client's upload when the application has answered in full and stopped reading it", async () => {
    const session = http2.connect(`http://127.0.0.1:${pair.outboundPort(h2App.port)}`);
    try {
      const req = session.request({ ":method": "POST", ":path": "/api/h2-early" });
      req.write("the start of a body that never ends");
      const flow = pair.b.flows.next((r) => r.http?.path === "/api/h2-early");
      const answered = await new Promise<{ status: number; body: string; rstCode: number | undefined }>(
        (resolve, reject) => {
          let status = 0;
          const chunks: Buffer[] = [];
          req.on("response", (h) => (status = Number(h[":status"])));
          req.on("data", (c: Buffer) => chunks.push(c));
          req.on("close", () =>
            resolve({ status, body: Buffer.concat(chunks).toString(), rstCode: req.rstCode }),
          );
          req.on("error", reject);
        },
      );
      expect(answered).toEqual({ status: 200, body: "early", rstCode: http2.constants.NGHTTP2_NO_ERROR });
      expect((await flow).http?.status).toBe(200);
    } finally {
      session.close();
    }
  });

  it("carries bodies many times the flow-control window both ways, whole and in order", async () => {
    const session = http2.connect(`http://127.0.0.1:${pair.outboundPort(h2App.port)}`);
    try {
      const sent = Array.from({ length: 200_000 }, (_, i) => `${i.toString(36)};`).join("");
      expect(sent.length).toBeGreaterThan(4 * 65_535);
      const req = session.request({ ":method": "POST", ":path": "/api/h2-large" });
      req.end(sent);
      const result = await new Promise<{ status: number; body: string }>((resolve, reject) => {
        let status = 0;
        const chunks: Buffer[] = [];
        req.on("response", (h) => (status = Number(h[":status"])));
        req.on("data", (c: Buffer) => chunks.push(c));
        req.on("end", () => resolve({ status, body: Buffer.concat(chunks).toString() }));
        req.on("error", reject);
      });
      expect(result.status).toBe(200);
      expect(JSON.parse(result.body)).toEqual({ path: "/api/h2-large", body: sent });
    } finally {
      session.close();
    }
  });
});
