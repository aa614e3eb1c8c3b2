import http from "node:http";
import type { AddressInfo } from "node:net";
import { Pool } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { SidecarPair } from "../support/sidecar-mesh.ts";
import { startPair } from "../support/sidecar-mesh.ts";

/** The mTLS hop's HTTP/1.1 pool is bounded per destination: a burst of clients shares it. */

const LIMIT = 2;
const REQUESTS = 10;

let app: http.Server;
let appPort: number;
let pair: SidecarPair;
let inFlight = 0;
let maxInFlight = 0;
let held: http.ServerResponse[] = [];

beforeAll(async () => {
  // Answers in groups of LIMIT: a request is only answered once LIMIT are in flight together, so the
  // hop must carry LIMIT requests at once, and the clients' other requests queue behind them while
  // the sidecar decides whether to open more hops.
  app = http.createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      inFlight++;
      maxInFlight = Math.max(maxInFlight, inFlight);
      held.push(res);
      if (held.length < LIMIT) return;
      const release = held;
      held = [];
      for (const r of release) {
        inFlight--;
        r.end("ok");
      }
    });
  });
  await new Promise<void>((resolve) => app.listen(0, "127.0.0.1", resolve));
  appPort = (app.address() as AddressInfo).port;
  pair = await startPair({
    appPorts: [appPort],
    protocols: { [appPort]: "http1" },
    configA: { meshConnectionsPerDestination: LIMIT },
    policyB: `
apiVersion: sigil.dev/v1
kind: AuthorizationPolicy
metadata: { name: api }
spec:
  selector: { matchLabels: { app: api } }
  ingress:
    - action: allow
      from: [ { matchLabels: { app: web } } ]
`,
  });
});

afterAll(async () => {
  await pair?.close();
  app?.closeAllConnections();
  await new Promise<void>((resolve) => app?.close(() => resolve()));
});

describe("mesh connection pool", () => {
  it("carries many client connections over at most meshConnectionsPerDestination mTLS hops", async () => {
    const client = new Pool(`http://127.0.0.1:${pair.outboundPort(appPort)}`, { connections: REQUESTS });
    try {
      const statuses = await Promise.all(
        Array.from({ length: REQUESTS }, async () => {
          const res = await client.request({ method: "POST", path: "/work", body: "x" });
          expect(await res.body.text()).toBe("ok");
          return res.statusCode;
        }),
      );
      expect(statuses).toEqual(Array.from({ length: REQUESTS }, () => 200));
    } finally {
      await client.close();
    }
    expect(maxInFlight).toBe(LIMIT);
    const handshakes = await pair.b.sidecar.metrics.tlsHandshakes.get();
    const ok = handshakes.values.filter((v) => v.labels.result === "ok").reduce((n, v) => n + v.value, 0);
    expect(ok).toBeGreaterThan(0);
    expect(ok).toBeLessThanOrEqual(LIMIT);
  });
});
