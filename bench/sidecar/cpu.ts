/**
 * CPU per proxied request, measured in one process so that scheduling noise from a loaded machine
 * hardly matters: the application, a sidecar pair and the client share one event loop, requests run
 * one after another over one keep-alive connection, and the figure is the process's CPU time (user +
 * system) per request through the pair minus the same through the direct path. HTTP/1.1 POST and
 * gRPC unary (over one HTTP/2 connection), 1 KB each way.
 *
 * `--http2-engines sessions,relay` starts one pair per HTTP/2 engine and measures them alternately
 * in each round, so a before/after of the engines shares the machine's state. `--floor` adds, in the
 * same rounds, a pair of bare Node mTLS pipes (`tls-pipe-pair.ts`): what the same hops cost in Node
 * with nothing parsed or decided.
 *
 * Usage: npx tsx bench/sidecar/cpu.ts [--requests 3000] [--rounds 3] [--only http|grpc]
 *          [--http2-engines sessions,relay] [--floor]
 */
import { performance } from "node:perf_hooks";
import * as grpc from "@grpc/grpc-js";
import { Pool } from "undici";
import { EchoClient, startGrpcApp, startHttpApp } from "../../test/support/sidecar-apps.ts";
import { startPair } from "../../test/support/sidecar-mesh.ts";
import type { Http2Engine } from "../../sidecar/http/http2/proxy.ts";
import { http2Engine } from "../compare/http2-engine.ts";
import { postBench, unaryEcho } from "./requests.ts";
import { startTlsPipePair } from "./tls-pipe-pair.ts";

const args = process.argv.slice(2);
const arg = (name: string, fallback: number): number => {
  const i = args.indexOf(`--${name}`);
  return i === -1 ? fallback : Number(args[i + 1]);
};
const REQUESTS = arg("requests", 3000);
const ROUNDS = arg("rounds", 3);
const ONLY = args.includes("--only") ? args[args.indexOf("--only") + 1] : undefined;
const ENGINES: (Http2Engine | undefined)[] = args.includes("--http2-engines")
  ? (args[args.indexOf("--http2-engines") + 1] ?? "").split(",").map((e) => http2Engine(e, "--http2-engines"))
  : [undefined];

async function serialHttp(port: number, n: number): Promise<void> {
  const pool = new Pool(`http://127.0.0.1:${port}`, { connections: 1 });
  try {
    for (let i = 0; i < n; i++) {
      await postBench(pool);
    }
  } finally {
    await pool.close();
  }
}

async function serialGrpc(port: number, n: number): Promise<void> {
  const client = new EchoClient(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  try {
    for (let i = 0; i < n; i++) {
      await unaryEcho(client);
    }
  } finally {
    client.close();
  }
}

type Serial = (port: number, n: number) => Promise<void>;

/** CPU and wall milliseconds per request over `REQUESTS` requests after a short warm-up. */
async function measure(serial: Serial, port: number): Promise<{ cpu: number; wall: number }> {
  await serial(port, 200);
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  await serial(port, REQUESTS);
  const cpu = process.cpuUsage(cpu0);
  return { cpu: (cpu.user + cpu.system) / 1000 / REQUESTS, wall: (performance.now() - t0) / REQUESTS };
}

const app = await startHttpApp();
const grpcApp = await startGrpcApp();
const pairs = await Promise.all(
  ENGINES.map(async (engine) => {
    const config = engine ? { http2Engine: engine } : {};
    const pair = await startPair({
      configA: config,
      configB: config,
      appPorts: [app.port, grpcApp.port],
      policyB: `
apiVersion: sigil.dev/v1
kind: AuthorizationPolicy
metadata: { name: bench }
spec:
  selector: { matchLabels: { app: api } }
  ingress:
    - action: allow
      from: [ { matchLabels: { app: web } } ]
      http: { methods: [ POST ], paths: [ "/bench", "/sigil.test.Echo/*" ] }
`,
      protocols: { [app.port]: "http1", [grpcApp.port]: "h2" },
      // Produced for every request and dropped, as bench/compare's sidecars do: kept, they would
      // fill the old generation and put major collections in some rounds and not others.
      keepFlows: false,
    });
    return { engine: engine ?? "default", pair };
  }),
);
const floor = args.includes("--floor")
  ? {
      http: await startTlsPipePair((pairs[0] as (typeof pairs)[number]).pair.pki, app.port),
      grpc: await startTlsPipePair((pairs[0] as (typeof pairs)[number]).pair.pki, grpcApp.port),
    }
  : undefined;
try {
  const rows: string[] = [];
  type Workload = [string, Serial, number, number | undefined];
  const workloads: Workload[] = [
    ...(ONLY === "grpc" ? [] : [["HTTP/1.1", serialHttp, app.port, floor?.http.port] as Workload]),
    ...(ONLY === "http" ? [] : [["gRPC unary", serialGrpc, grpcApp.port, floor?.grpc.port] as Workload]),
  ];
  for (const [name, serial, port, floorPort] of workloads) {
    for (let round = 1; round <= ROUNDS; round++) {
      const direct = await measure(serial, port);
      const paths: [string, number][] = pairs.map(({ engine, pair }) => [engine, pair.outboundPort(port)]);
      if (floorPort !== undefined) paths.push(["bare Node mTLS pipes", floorPort]);
      for (const [path, via] of paths) {
        const proxied = await measure(serial, via);
        rows.push(
          `| ${name} | ${path} | ${round} | ${direct.cpu.toFixed(3)} | ${proxied.cpu.toFixed(3)} | ${(proxied.cpu - direct.cpu).toFixed(3)} | ${proxied.wall.toFixed(3)} |`,
        );
      }
    }
  }
  process.stdout.write(
    `1 KB → 1 KB, ${REQUESTS} sequential requests per path and round, node ${process.version}\n\n` +
      "| workload | pair (HTTP/2 engine) | round | direct CPU ms/req | via pair CPU ms/req | pair's own CPU ms/req (both sidecars) | via pair wall ms/req |\n" +
      "| --- | --- | --- | --- | --- | --- | --- |\n" +
      `${rows.join("\n")}\n`,
  );
} finally {
  await floor?.http.close();
  await floor?.grpc.close();
  for (const { pair } of pairs) await pair.close();
  await app.close();
  await grpcApp.close();
}
