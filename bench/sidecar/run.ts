/**
 * Requests per second and p50/p99 latency through a sidecar pair (client → A → mTLS → B → app) versus
 * straight to the app, for 1 KB HTTP/1.1 and gRPC unary, plus CPU seconds and RSS of each sidecar
 * process. Usage: npx tsx bench/sidecar/run.ts [--seconds 10] [--concurrency 16] [--only http|grpc]
 * [--profile DIR] (the sidecars run under node --cpu-prof and write their profiles into DIR)
 * [--sidecar-flags "<node flags>"] (extra node flags for the two sidecar processes)
 * [--workers N] (each sidecar runs its data path in N worker processes; NODE_CLUSTER_SCHED_POLICY=rr|none
 * in the environment picks how connections are handed to them).
 */
import { fork } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { once } from "node:events";
import { cpus, loadavg } from "node:os";
import { performance } from "node:perf_hooks";
import * as grpc from "@grpc/grpc-js";
import { Pool } from "undici";
import { bundleToJson } from "../../core/svid/bundle.ts";
import { EchoClient } from "../../test/support/sidecar-apps.ts";
import { MeshPki, TRUST_DOMAIN } from "../../test/support/sidecar-mesh.ts";
import { postBench, unaryEcho } from "./requests.ts";
import type { StartMessage } from "./sidecar-process.ts";

const args = process.argv.slice(2);
const arg = (name: string, fallback: number): number => {
  const i = args.indexOf(`--${name}`);
  return i === -1 ? fallback : Number(args[i + 1]);
};
const SECONDS = arg("seconds", 10);
const CONCURRENCY = arg("concurrency", 16);
const option = (name: string): string | undefined => {
  const i = args.indexOf(`--${name}`);
  return i === -1 ? undefined : args[i + 1];
};
const ONLY = option("only");
const PROFILE_DIR = option("profile");
/** Extra node flags for the sidecar processes, space-separated (e.g. "--max-semi-space-size=2"). */
const SIDECAR_FLAGS = (option("sidecar-flags") ?? "").split(" ").filter((f) => f !== "");
const WORKERS = arg("workers", 1);

const here = new URL(".", import.meta.url).pathname;
const spawn = (file: string, sidecar = false): ChildProcess =>
  fork(`${here}${file}`, [], {
    execArgv: [
      "--import",
      "tsx",
      ...(sidecar ? SIDECAR_FLAGS : []),
      ...(sidecar && PROFILE_DIR !== undefined ? ["--cpu-prof", "--cpu-prof-dir", PROFILE_DIR] : []),
    ],
    stdio: ["ignore", "inherit", "inherit", "ipc"],
  });

async function request<T>(child: ChildProcess, message: unknown, key: string): Promise<T> {
  const reply = new Promise<T>((resolve) => {
    const onMessage = (m: Record<string, unknown>): void => {
      if (key in m) {
        child.off("message", onMessage);
        resolve(m[key] as T);
      }
    };
    child.on("message", onMessage);
  });
  if (message !== null) child.send(message as object);
  return reply;
}

interface Result {
  readonly rps: number;
  readonly p50: number;
  readonly p99: number;
  readonly errors: number;
  /** Every request the row made, warm-up included (the CPU window spans both). */
  readonly requests: number;
}

function summarize(latencies: number[], errors: number, seconds: number, warmUp: number): Result {
  latencies.sort((a, b) => a - b);
  const at = (q: number): number =>
    latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? NaN;
  return {
    rps: latencies.length / seconds,
    p50: at(0.5),
    p99: at(0.99),
    errors,
    requests: latencies.length + warmUp,
  };
}

/** Keeps CONCURRENCY requests in flight for SECONDS (after a short warm-up), timing each. */
async function load(one: () => Promise<void>): Promise<Result> {
  const warmEnd = performance.now() + 1000;
  let warmUp = 0;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (performance.now() < warmEnd) {
        await one().catch(() => undefined);
        warmUp++;
      }
    }),
  );
  const latencies: number[] = [];
  let errors = 0;
  const start = performance.now();
  const end = start + SECONDS * 1000;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (performance.now() < end) {
        const t = performance.now();
        try {
          await one();
          latencies.push(performance.now() - t);
        } catch {
          errors++;
        }
      }
    }),
  );
  return summarize(latencies, errors, (performance.now() - start) / 1000, warmUp);
}

async function httpLoad(port: number): Promise<Result> {
  const pool = new Pool(`http://127.0.0.1:${port}`, { connections: CONCURRENCY, pipelining: 1 });
  try {
    return await load(() => postBench(pool));
  } finally {
    await pool.close();
  }
}

async function grpcLoad(port: number): Promise<Result> {
  const client = new EchoClient(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  try {
    return await load(() => unaryEcho(client));
  } finally {
    client.close();
  }
}

async function run(): Promise<void> {
  const app = spawn("app-process.ts");
  const appPorts = await new Promise<{ http: number; grpc: number }>((resolve) =>
    app.once("message", (m: { http: number; grpc: number }) => resolve(m)),
  );
  const pki = await MeshPki.create();
  const a = spawn("sidecar-process.ts", true);
  const b = spawn("sidecar-process.ts", true);
  try {
    const policyYaml = `
apiVersion: sigil.dev/v1
kind: AuthorizationPolicy
metadata: { name: bench }
spec:
  selector: { matchLabels: { app: api } }
  ingress:
    - action: allow
      from: [ { matchLabels: { app: web } } ]
      http: { methods: [ POST ], paths: [ "/bench", "/sigil.test.Echo/*" ] }
`;
    const credsA = await pki.credentials("web", { app: "web" });
    const credsB = await pki.credentials("api", { app: "api" });
    const base = { trustDomain: TRUST_DOMAIN, bundleJson: bundleToJson(pki.ca.bundle()), policyYaml };
    const startedB = await request<{ inbound: number; targets: number[] }>(
      b,
      {
        start: {
          ...base,
          privateKeyPem: credsB.privateKeyPem,
          certChainPem: credsB.certChainPem,
          targets: [],
          peers: [],
          workers: WORKERS,
        } satisfies StartMessage,
      },
      "started",
    );
    const peer = (port: number): StartMessage["peers"][number] => ({
      address: "127.0.0.1",
      port,
      spiffeId: pki.spiffeId("api"),
      labels: { app: "api" },
      sidecarPort: startedB.inbound,
    });
    const startedA = await request<{ inbound: number; targets: number[] }>(
      a,
      {
        start: {
          ...base,
          privateKeyPem: credsA.privateKeyPem,
          certChainPem: credsA.certChainPem,
          targets: [
            { host: "127.0.0.1", port: appPorts.http, protocol: "http1" },
            { host: "127.0.0.1", port: appPorts.grpc, protocol: "h2" },
          ],
          peers: [peer(appPorts.http), peer(appPorts.grpc)],
          workers: WORKERS,
        } satisfies StartMessage,
      },
      "started",
    );
    const [viaHttp, viaGrpc] = startedA.targets as [number, number];
    const usage = async (): Promise<{
      a: { cpuSeconds: number; rssBytes: number; peakRssBytes: number; handshakes: number };
      b: { cpuSeconds: number; rssBytes: number; peakRssBytes: number; handshakes: number };
    }> => ({
      a: await request(a, { usage: true }, "usage"),
      b: await request(b, { usage: true }, "usage"),
    });
    const rows: string[] = [];
    const fmt = (r: Result): string =>
      `${r.rps.toFixed(0)} | ${r.p50.toFixed(2)} | ${r.p99.toFixed(2)} | ${r.errors}`;
    const measure = async (
      name: string,
      direct: () => Promise<Result>,
      proxied: () => Promise<Result>,
    ): Promise<void> => {
      const d = await direct();
      rows.push(`| ${name} | direct | ${fmt(d)} | – | – | – | – |`);
      const before = await usage();
      const p = await proxied();
      const after = await usage();
      const cpuA = after.a.cpuSeconds - before.a.cpuSeconds;
      const cpuB = after.b.cpuSeconds - before.b.cpuSeconds;
      const perRequest = (cpu: number): string => ((cpu * 1000) / Math.max(1, p.requests)).toFixed(2);
      rows.push(
        `| ${name} | sidecar pair | ${fmt(p)} | A ${cpuA.toFixed(1)} / B ${cpuB.toFixed(1)} | A ${perRequest(cpuA)} / B ${perRequest(cpuB)} | A ${(after.a.rssBytes / 2 ** 20).toFixed(0)} (${(after.a.peakRssBytes / 2 ** 20).toFixed(0)}) / B ${(after.b.rssBytes / 2 ** 20).toFixed(0)} (${(after.b.peakRssBytes / 2 ** 20).toFixed(0)}) | ${after.b.handshakes - before.b.handshakes} |`,
      );
    };
    if (ONLY !== "grpc")
      await measure(
        "HTTP/1.1 POST 1 KB → 1 KB",
        () => httpLoad(appPorts.http),
        () => httpLoad(viaHttp),
      );
    if (ONLY !== "http")
      await measure(
        "gRPC unary 1 KB → 1 KB",
        () => grpcLoad(appPorts.grpc),
        () => grpcLoad(viaGrpc),
      );
    process.stdout.write(
      `${SECONDS} s per row after 1 s warm-up, ${CONCURRENCY} requests in flight, ${WORKERS} data-path ` +
        `process(es) per sidecar, node ${process.version}, ` +
        `${cpus().length} CPUs, load average ${loadavg()
          .map((l) => l.toFixed(1))
          .join(" ")} at the end\n\n` +
        "| workload | path | req/s | p50 ms | p99 ms | errors | sidecar CPU s (during the row) | CPU ms per request | sidecar RSS MiB after (peak) | mTLS handshakes |\n" +
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n" +
        `${rows.join("\n")}\n`,
    );
  } finally {
    for (const c of [a, b, app]) {
      c.kill();
      await once(c, "exit");
    }
    await pki.close();
  }
}

run().catch((err: Error) => {
  process.stderr.write(`${err.stack}\n`);
  process.exitCode = 1;
});
