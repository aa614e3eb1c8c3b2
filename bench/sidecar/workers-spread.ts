/**
 * How a sidecar with worker processes spreads connections over them, per cluster scheduling
 * policy: one sidecar (explicit mode, an outbound target to a local HTTP app) with N workers, then
 * (1) C keep-alive connections carrying R requests, (2) R requests on a new connection each. The
 * split comes from the primary's `sigil_sidecar_worker_requests_total{worker}`.
 *
 *   npx tsx bench/sidecar/workers-spread.ts [--workers 2] [--connections 16] [--requests 2000]
 *
 * Run it once per policy: NODE_CLUSTER_SCHED_POLICY=rr (the primary accepts and hands each
 * connection to the next worker) or =none (every worker accepts; the kernel picks).
 */
import cluster from "node:cluster";
import { request as httpRequest } from "node:http";
import { loadavg } from "node:os";
import { performance } from "node:perf_hooks";
import pino from "pino";
import { Pool } from "undici";
import { emptyPolicySet } from "../../core/policy/index.ts";
import { CredentialHolder, PolicyHolder } from "../../sidecar/inputs/state.ts";
import { startSidecarWorkers } from "../../sidecar/worker-processes/primary.ts";
import { runSidecarWorker } from "../../sidecar/worker-processes/worker.ts";
import { startHttpApp } from "../../test/support/sidecar-apps.ts";
import { MeshPki, TRUST_DOMAIN } from "../../test/support/sidecar-mesh.ts";

const args = process.argv.slice(2);
const arg = (name: string, fallback: number): number => {
  const i = args.indexOf(`--${name}`);
  return i === -1 ? fallback : Number(args[i + 1]);
};
const WORKERS = arg("workers", 2);
const CONNECTIONS = arg("connections", 16);
const REQUESTS = arg("requests", 2000);

async function perWorker(adminPort: number): Promise<number[]> {
  const text = await (await fetch(`http://127.0.0.1:${adminPort}/stats/prometheus`)).text();
  return [...text.matchAll(/^sigil_sidecar_worker_requests_total\{worker="\d+"\} (\d+)$/gm)].map((m) =>
    Number(m[1]),
  );
}

function newConnectionGet(port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: "127.0.0.1", port, path: "/", agent: false }, (res) => {
      res.resume();
      res.on("end", () => resolve());
    });
    req.on("error", reject);
    req.end();
  });
}

async function run(): Promise<void> {
  const pki = await MeshPki.create();
  const app = await startHttpApp();
  const sidecar = await startSidecarWorkers({
    workers: WORKERS,
    config: {
      mode: "explicit",
      inbound: { host: "127.0.0.1", port: 0 },
      admin: { port: 0 },
      outbound: {
        targets: [{ port: 0, destination: { host: "127.0.0.1", port: app.port }, protocol: "http1" }],
      },
    },
    credentials: new CredentialHolder(await pki.credentials("web", { app: "web" })),
    policy: new PolicyHolder({ trustDomain: TRUST_DOMAIN, policies: emptyPolicySet() }),
    flows: { report: () => undefined },
    logger: pino({ level: "warn" }, pino.destination(2)),
  });
  const port = sidecar.outboundTargets[0]?.port ?? 0;
  try {
    const pool = new Pool(`http://127.0.0.1:${port}`, { connections: CONNECTIONS, pipelining: 1 });
    let t = performance.now();
    let next = 0;
    await Promise.all(
      Array.from({ length: CONNECTIONS }, async () => {
        while (next++ < REQUESTS) await (await pool.request({ path: "/", method: "GET" })).body.dump();
      }),
    );
    const keepAliveSeconds = (performance.now() - t) / 1000;
    await pool.close();
    const afterKeepAlive = await perWorker(sidecar.admin.port);
    t = performance.now();
    next = 0;
    await Promise.all(
      Array.from({ length: CONNECTIONS }, async () => {
        while (next++ < REQUESTS) await newConnectionGet(port);
      }),
    );
    const perConnectionSeconds = (performance.now() - t) / 1000;
    const total = await perWorker(sidecar.admin.port);
    const fresh = total.map((n, i) => n - (afterKeepAlive[i] ?? 0));
    process.stdout.write(
      `scheduling ${process.env.NODE_CLUSTER_SCHED_POLICY ?? "rr (default)"}, ${WORKERS} workers, ` +
        `load average ${loadavg()
          .map((l) => l.toFixed(1))
          .join(" ")}\n` +
        `  ${CONNECTIONS} keep-alive connections, ${REQUESTS} requests: per worker ${afterKeepAlive.join(" / ")} ` +
        `(${(REQUESTS / keepAliveSeconds).toFixed(0)} req/s)\n` +
        `  a new connection per request, ${REQUESTS} requests: per worker ${fresh.join(" / ")} ` +
        `(${(REQUESTS / perConnectionSeconds).toFixed(0)} req/s)\n`,
    );
  } finally {
    await sidecar.close();
    await app.close();
    await pki.close();
  }
}

if (cluster.isWorker) runSidecarWorker();
else
  run().catch((err: Error) => {
    process.stderr.write(`${err.stack}\n`);
    process.exitCode = 1;
  });
