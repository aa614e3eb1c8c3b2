/**
 * Connection churn soak: one sidecar in its own process takes waves of concurrent inbound mTLS
 * connections, each carrying one HTTP/1.1 request to the application behind it, then closed. After
 * each wave the sidecar collects garbage twice and reports its heap, external memory, RSS and open
 * file descriptors, so memory held per wave shows as growth from one wave to the next.
 * With `--snapshots DIR` the sidecar writes a heap snapshot there after the second and the last wave,
 * for comparing what is reachable in each (Chrome DevTools' comparison view, or heap-diff.ts).
 * Usage: npx tsx bench/sidecar/soak.ts [--waves 20] [--connections 2000] [--sidecar-flags "<node flags>"]
 *        [--snapshots DIR]
 */
import { fork } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { once } from "node:events";
import { loadavg } from "node:os";
import tls from "node:tls";
import { bundleRootsPem, bundleToJson } from "../../core/svid/bundle.ts";
import { MeshPki, TRUST_DOMAIN } from "../../test/support/sidecar-mesh.ts";
import { SIDECAR_NODE_FLAGS } from "../../inject/constants.ts";
import { PAYLOAD } from "./requests.ts";
import type { MemoryReading, StartMessage } from "./sidecar-process.ts";

const args = process.argv.slice(2);
const option = (name: string): string | undefined => {
  const i = args.indexOf(`--${name}`);
  return i === -1 ? undefined : args[i + 1];
};
const WAVES = Number(option("waves") ?? 20);
const CONNECTIONS = Number(option("connections") ?? 2000);
const SIDECAR_FLAGS = (option("sidecar-flags") ?? SIDECAR_NODE_FLAGS.join(" ")).split(" ").filter((f) => f);
const SNAPSHOTS = option("snapshots");
/** Growth allowed from the second wave to the last (the target: 10 %). */
const TOLERANCE = 0.1;

const here = new URL(".", import.meta.url).pathname;
const spawn = (file: string, execArgv: readonly string[]): ChildProcess =>
  fork(`${here}${file}`, [], {
    execArgv: ["--import", "tsx", ...execArgv],
    stdio: ["ignore", "inherit", "inherit", "ipc"],
  });

function reply<T>(child: ChildProcess, message: object | null, key: string): Promise<T> {
  const answer = new Promise<T>((resolve) => {
    const onMessage = (m: Record<string, unknown>): void => {
      if (!(key in m)) return;
      child.off("message", onMessage);
      resolve(m[key] as T);
    };
    child.on("message", onMessage);
  });
  if (message) child.send(message);
  return answer;
}

const REQUEST = Buffer.concat([
  Buffer.from(`POST /bench HTTP/1.1\r\nhost: api\r\ncontent-length: ${PAYLOAD.length}\r\n\r\n`),
  PAYLOAD,
]);

/** Opens one mesh connection, sends one request and resolves with the status once the body is in. */
function oneExchange(port: number, appPort: number, secureContext: tls.SecureContext): Promise<number> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({
      host: "127.0.0.1",
      port,
      secureContext,
      ALPNProtocols: [`sigil/1;http1;${appPort}`],
      checkServerIdentity: () => undefined,
    });
    let received = Buffer.alloc(0);
    socket.once("secureConnect", () => socket.write(REQUEST));
    socket.on("data", (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      const head = received.indexOf("\r\n\r\n");
      if (head === -1) return;
      const length = Number(/content-length: *(\d+)/i.exec(received.subarray(0, head).toString())?.[1] ?? 0);
      if (received.length - head - 4 < length) return;
      resolve(Number(received.subarray(9, 12).toString()));
      socket.end();
    });
    socket.once("error", reject);
    socket.once("close", () => reject(new Error("closed before the response")));
  });
}

const mib = (bytes: number): string => (bytes / 2 ** 20).toFixed(1);

async function run(): Promise<void> {
  const app = spawn("app-process.ts", []);
  const sidecar = spawn("sidecar-process.ts", ["--expose-gc", ...SIDECAR_FLAGS]);
  const pki = await MeshPki.create();
  try {
    const appPorts = await reply<number>(app, null, "http");
    const creds = await pki.credentials("web", { app: "web" });
    const server = await pki.credentials("api", { app: "api" });
    const started = await reply<{ inbound: number }>(
      sidecar,
      {
        start: {
          trustDomain: TRUST_DOMAIN,
          bundleJson: bundleToJson(pki.ca.bundle()),
          policyYaml: `
apiVersion: sigil.dev/v1
kind: AuthorizationPolicy
metadata: { name: soak }
spec:
  selector: { matchLabels: { app: api } }
  ingress:
    - action: allow
      from: [ { matchLabels: { app: web } } ]
      http: { methods: [ POST ], paths: [ "/bench" ] }
`,
          privateKeyPem: server.privateKeyPem,
          certChainPem: server.certChainPem,
          targets: [],
          peers: [],
        } satisfies StartMessage,
      },
      "started",
    );
    // One context for every client connection: parsing the key and chain per connection would make
    // the load generator, not the sidecar, the bottleneck of a wave.
    const secureContext = tls.createSecureContext({
      key: creds.privateKeyPem,
      cert: creds.certChainPem,
      ca: bundleRootsPem(pki.ca.bundle()),
    });
    const rows: MemoryReading[] = [await reply<MemoryReading>(sidecar, { memory: true }, "memory")];
    process.stdout.write(
      "| wave | failed exchanges | heap used MiB | heap total MiB | external MiB | RSS MiB | peak RSS MiB | PSS MiB | USS MiB | open fds |\n" +
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    const line = (wave: string, failed: string, m: MemoryReading): void => {
      process.stdout.write(
        `| ${wave} | ${failed} | ${mib(m.heapUsedBytes)} | ${mib(m.heapTotalBytes)} | ${mib(m.externalBytes)} | ` +
          `${mib(m.rssBytes)} | ${mib(m.peakRssBytes)} | ${mib(m.pssBytes)} | ${mib(m.ussBytes)} | ${m.openFds} |\n`,
      );
    };
    line("before", "–", rows[0] as MemoryReading);
    for (let wave = 1; wave <= WAVES; wave++) {
      const results = await Promise.allSettled(
        Array.from({ length: CONNECTIONS }, () => oneExchange(started.inbound, appPorts, secureContext)),
      );
      const reasons = new Map<string, number>();
      for (const r of results) {
        const reason =
          r.status === "rejected"
            ? String((r.reason as Error).message)
            : r.value === 200
              ? null
              : `status ${r.value}`;
        if (reason !== null) reasons.set(reason, (reasons.get(reason) ?? 0) + 1);
      }
      const failed = [...reasons].map(([reason, n]) => `${n} ${reason}`).join("; ") || "0";
      const m = await reply<MemoryReading>(sidecar, { memory: true }, "memory");
      rows.push(m);
      line(String(wave), failed, m);
      if (SNAPSHOTS !== undefined && (wave === 2 || wave === WAVES)) {
        const file = await reply<string>(
          sidecar,
          { snapshot: `${SNAPSHOTS}/wave-${wave}.heapsnapshot` },
          "snapshot",
        );
        process.stdout.write(`  heap snapshot: ${file}\n`);
      }
      if (Object.keys(m.refusals).length > 0)
        process.stdout.write(`  refused so far: ${JSON.stringify(m.refusals)}\n`);
    }
    const second = rows[2];
    const last = rows[rows.length - 1];
    if (second && last) {
      const growth = (key: "heapUsedBytes" | "rssBytes"): number => last[key] / second[key] - 1;
      const heap = growth("heapUsedBytes");
      const rss = growth("rssBytes");
      process.stdout.write(
        `\nlast wave vs second: heap ${(heap * 100).toFixed(1)} %, RSS ${(rss * 100).toFixed(1)} % ` +
          `(target within ${TOLERANCE * 100} %: ${heap <= TOLERANCE && rss <= TOLERANCE ? "met" : "missed"}); ` +
          `${CONNECTIONS} connections a wave, sidecar flags "${SIDECAR_FLAGS.join(" ")}", node ${process.version}, ` +
          `load average ${loadavg()
            .map((l) => l.toFixed(1))
            .join(" ")}\n`,
      );
    }
  } finally {
    for (const child of [sidecar, app]) {
      child.kill();
      await once(child, "exit");
    }
    await pki.close();
  }
}

run().catch((err: Error) => {
  process.stderr.write(`${err.stack}\n`);
  process.exitCode = 1;
});
