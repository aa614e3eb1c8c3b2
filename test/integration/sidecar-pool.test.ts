import { once } from "node:events";
import http from "node:http";
import net from "node:net";
import type { AddressInfo } from "node:net";
import { Pool } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { apiIngressPolicy } from "../support/api-ingress.ts";
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
    policyB: apiIngressPolicy(),
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

describe("a client that leaves while its request waits for the hop", () => {
  let holdApp: http.Server;
  let holdPort: number;
  let holdPair: SidecarPair;
  const seen: string[] = [];
  let release: (() => void) | null = null;

  beforeAll(async () => {
    holdApp = http.createServer((req, res) => {
      seen.push(req.url ?? "");
      req.resume();
      if (req.url === "/hold") release = () => res.end("released");
      else res.end("ok");
    });
    await new Promise<void>((resolve) => holdApp.listen(0, "127.0.0.1", resolve));
    holdPort = (holdApp.address() as AddressInfo).port;
    holdPair = await startPair({
      appPorts: [holdPort],
      protocols: { [holdPort]: "http1" },
      configA: { meshConnectionsPerDestination: 1 },
      policyB: apiIngressPolicy(),
    });
  });

  afterAll(async () => {
    await holdPair?.close();
    holdApp?.closeAllConnections();
    await new Promise<void>((resolve) => holdApp?.close(() => resolve()));
  });

  async function egressConnections(): Promise<number> {
    const metric = await holdPair.a.sidecar.metrics.activeConnections.get();
    return metric.values.find((v) => v.labels.direction === "egress")?.value ?? 0;
  }

  async function until(condition: () => boolean | Promise<boolean>, what: string): Promise<void> {
    const deadline = Date.now() + 5000;
    while (!(await condition())) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((resolve) => setImmediate(resolve));
    }
  }

  it("never sends it upstream", async () => {
    const port = holdPair.outboundPort(holdPort);
    const first = new Pool(`http://127.0.0.1:${port}`, { connections: 1 });
    const third = new Pool(`http://127.0.0.1:${port}`, { connections: 1 });
    try {
      const held = first.request({ method: "GET", path: "/hold" });
      await until(() => release !== null, "the first request to reach the application");
      // The only hop is busy: this request queues in sidecar A, then its client goes away.
      const leaving = net.connect(port, "127.0.0.1");
      await once(leaving, "connect");
      leaving.write("GET /abandoned HTTP/1.1\r\nHost: api\r\n\r\n");
      await until(async () => (await egressConnections()) === 2, "the second client connection");
      leaving.destroy();
      await until(async () => (await egressConnections()) === 1, "sidecar A to see the client leave");
      (release as unknown as () => void)();
      expect(await (await held).body.text()).toBe("released");
      // The hop is first in, first out: had the abandoned request been sent, it would come first.
      const after = await third.request({ method: "GET", path: "/after" });
      expect(await after.body.text()).toBe("ok");
      expect(seen).toEqual(["/hold", "/after"]);
    } finally {
      await Promise.all([first.close(), third.close()]);
    }
  });
});
