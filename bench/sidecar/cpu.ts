/**
 * CPU per proxied request, measured in one process so that scheduling noise from a loaded machine
 * hardly matters: the application, a sidecar pair and the client share one event loop, requests run
 * one after another over one keep-alive connection, and the figure is the process's CPU time (user +
 * system) per request through the pair minus the same through the direct path.
 *
 * Usage: npx tsx bench/sidecar/cpu.ts [--requests 3000] [--rounds 3]
 */
import { performance } from "node:perf_hooks";
import { Pool } from "undici";
import { startHttpApp } from "../../test/support/sidecar-apps.ts";
import { startPair } from "../../test/support/sidecar-mesh.ts";

const args = process.argv.slice(2);
const arg = (name: string, fallback: number): number => {
  const i = args.indexOf(`--${name}`);
  return i === -1 ? fallback : Number(args[i + 1]);
};
const REQUESTS = arg("requests", 3000);
const ROUNDS = arg("rounds", 3);
const PAYLOAD = Buffer.alloc(1024, "y");

async function serial(port: number, n: number): Promise<void> {
  const pool = new Pool(`http://127.0.0.1:${port}`, { connections: 1 });
  try {
    for (let i = 0; i < n; i++) {
      const res = await pool.request({
        method: "POST",
        path: "/bench",
        body: PAYLOAD,
        headers: { "content-length": "1024" },
      });
      await res.body.arrayBuffer();
      if (res.statusCode !== 200) throw new Error(`status ${res.statusCode}`);
    }
  } finally {
    await pool.close();
  }
}

/** CPU and wall milliseconds per request over `REQUESTS` requests after a short warm-up. */
async function measure(port: number): Promise<{ cpu: number; wall: number }> {
  await serial(port, 200);
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  await serial(port, REQUESTS);
  const cpu = process.cpuUsage(cpu0);
  return { cpu: (cpu.user + cpu.system) / 1000 / REQUESTS, wall: (performance.now() - t0) / REQUESTS };
}

const app = await startHttpApp();
const pair = await startPair({
  appPorts: [app.port],
  policyB: `
apiVersion: sigil.dev/v1
kind: AuthorizationPolicy
metadata: { name: bench }
spec:
  selector: { matchLabels: { app: api } }
  ingress:
    - action: allow
      from: [ { matchLabels: { app: web } } ]
      http: { methods: [ POST ], paths: [ "/bench" ] }
`,
  protocols: { [app.port]: "http1" },
});
try {
  const rows: string[] = [];
  for (let round = 1; round <= ROUNDS; round++) {
    const direct = await measure(app.port);
    const proxied = await measure(pair.outboundPort(app.port));
    rows.push(
      `| ${round} | ${direct.cpu.toFixed(3)} | ${proxied.cpu.toFixed(3)} | ${(proxied.cpu - direct.cpu).toFixed(3)} | ${proxied.wall.toFixed(3)} |`,
    );
  }
  process.stdout.write(
    `HTTP/1.1 POST 1 KB → 1 KB, ${REQUESTS} sequential requests per path and round, node ${process.version}\n\n` +
      "| round | direct CPU ms/req | via pair CPU ms/req | pair's own CPU ms/req (both sidecars) | via pair wall ms/req |\n" +
      "| --- | --- | --- | --- | --- |\n" +
      `${rows.join("\n")}\n`,
  );
} finally {
  await pair.close();
  await app.close();
}
