import http2 from "node:http2";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { apiIngressPolicy } from "../support/api-ingress.ts";
import type { App } from "../support/sidecar-apps.ts";
import { startH2App } from "../support/sidecar-apps.ts";
import type { SidecarPair } from "../support/sidecar-mesh.ts";
import { policySet, startPair } from "../support/sidecar-mesh.ts";

/**
 * HTTP/2 stream bodies through a sidecar pair (client → A → mTLS → B → application): backpressure
 * across both hops, a stream whose reader stalls without stalling the others, and an upload the
 * application stops reading once it has answered in full. Both HTTP/2 engines are held to it.
 */

let h2App: App;

beforeAll(async () => {
  h2App = await startH2App();
});

afterAll(async () => {
  await h2App?.close();
});

interface Answer {
  status: number;
  body: string;
}

function answer(req: http2.ClientHttp2Stream): Promise<Answer> {
  return new Promise((resolve, reject) => {
    let status = 0;
    const chunks: Buffer[] = [];
    req.on("response", (h) => (status = Number(h[":status"])));
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => resolve({ status, body: Buffer.concat(chunks).toString() }));
    req.on("error", reject);
  });
}

/** A body several times both the stream and the connection windows. */
const LARGE = Array.from({ length: 250_000 }, (_, i) => `${i.toString(36)};`).join("");

describe.each(["relay", "sessions"] as const)(
  "HTTP/2 stream bodies through a sidecar pair (%s)",
  (engine) => {
    let pair: SidecarPair;

    beforeAll(async () => {
      const config = { http2Engine: engine };
      pair = await startPair({ appPorts: [h2App.port], configA: config, configB: config });
      pair.b.policy.update({
        policies: policySet(apiIngressPolicy({ ports: [h2App.port], methods: ["POST"], paths: ["/api/**"] })),
      });
    });

    afterAll(async () => {
      await pair?.close();
    });

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
        expect(LARGE.length).toBeGreaterThan(1 << 20);
        const req = session.request({ ":method": "POST", ":path": "/api/h2-large" });
        req.end(LARGE);
        const result = await answer(req);
        expect(result.status).toBe(200);
        expect(JSON.parse(result.body)).toEqual({ path: "/api/h2-large", body: LARGE });
      } finally {
        session.close();
      }
    });

    it("serves other streams on a connection while one stream's reader has stopped reading", async () => {
      const session = http2.connect(`http://127.0.0.1:${pair.outboundPort(h2App.port)}`);
      try {
        const stalled = session.request({ ":method": "POST", ":path": "/api/h2-stalled" });
        stalled.pause();
        stalled.end(LARGE);
        const stalledAnswer = answer(stalled);
        stalled.pause();
        for (let i = 0; i < 3; i++) {
          const req = session.request({ ":method": "POST", ":path": `/api/h2-beside-${i}` });
          req.end(`small ${i}`);
          const result = await answer(req);
          expect(JSON.parse(result.body)).toEqual({ path: `/api/h2-beside-${i}`, body: `small ${i}` });
        }
        stalled.resume();
        const result = await stalledAnswer;
        expect(JSON.parse(result.body)).toEqual({ path: "/api/h2-stalled", body: LARGE });
      } finally {
        session.close();
      }
    });
  },
);
