/**
 * Sequential (or parallel) connects between ONE pair of hosts through both fast-path enforcers,
 * with the queue count as a parameter: where the enforcers' time goes per handshake packet and how
 * the packets spread over the queues. Smaller than run.ts (no iperf3, no proxy), for before/after
 * comparisons of the handshake path.
 *
 *   npx tsx bench/fastpath/queues.ts [--queues 2] [--connects 2000] [--rate]
 *
 * Prints one JSON object: the connect-probe result, and per enforcer the mean µs per packet kind
 * (deciding wall / deciding thread CPU / verdict call wall) and the packets each queue received.
 */
import { Command } from "commander";
import { NetnsLab } from "../../test/support/netns.ts";
import {
  ECHO_PORT,
  allowManyConnections,
  startAppServers,
  startEnforcerPair,
  webToDbPolicy,
} from "../../test/e2e/fastpath-support/lab.ts";
import { REPO_ROOT } from "../../test/e2e/fastpath-support/process-output.ts";
import { TestPki } from "../../test/e2e/fastpath-support/pki.ts";
import type { EnforcerStats } from "../../sidecar/fastpath/enforcer.ts";

const opts = new Command()
  .option("--queues <n>", "NFQUEUE queues (worker threads) per enforcer", "2")
  .option("--connects <n>", "sequential connects", "2000")
  .option("--rate", "16 parallel connectors for 5 s instead of sequential connects")
  .parse()
  .opts<{ queues: string; connects: string; rate?: boolean }>();

const round = (x: number): number => Math.round(x * 10) / 10;

/**
 * Per packet kind: packets the native warm table decided with mean µs deciding / in the verdict
 * call, and packets JS decided with mean µs deciding / deciding thread CPU / in the verdict call.
 */
function summary(stats: EnforcerStats): object {
  const perKind = Object.fromEntries(
    Object.entries(stats.counters.timing).map(([kind, t]) => {
      const w = stats.counters.warm[kind as keyof typeof stats.counters.warm];
      return [
        kind,
        {
          native: [w.handled, w.decideUs / Math.max(w.handled, 1), w.verdictUs / Math.max(w.handled, 1)].map(
            round,
          ),
          js: [
            t.count,
            t.decideUs / Math.max(t.count, 1),
            t.decideCpuUs / Math.max(t.cpuSamples, 1),
            t.verdictUs / Math.max(t.count, 1),
          ].map(round),
        },
      ];
    }),
  );
  return { perKind, queues: Object.fromEntries(stats.queues.map((q) => [q.queue, q.received])) };
}

const lab = await NetnsLab.create(["client", "server"]);
const pki = await TestPki.create();
try {
  const client = lab.host("client");
  const server = lab.host("server");
  await allowManyConnections([client, server]);
  await startAppServers(server);
  const policyFile = await pki.file("policy.yaml", webToDbPolicy([ECHO_PORT]));
  const queueCount = Number(opts.queues);
  const enforcers = await startEnforcerPair(pki, server, client, {
    policyFile,
    ports: [ECHO_PORT],
    queueCount,
  });
  const probe = await client.ns.execOk(
    [
      process.execPath,
      "--import",
      "tsx",
      `${REPO_ROOT}bench/fastpath/connect-probe.ts`,
      ...(opts.rate
        ? ["rate", server.ipv4, String(ECHO_PORT), "5", "16"]
        : ["latency", server.ipv4, String(ECHO_PORT), opts.connects]),
    ],
    { timeoutMs: 300_000 },
  );
  console.log(
    JSON.stringify({
      queues: queueCount,
      probe: JSON.parse(probe.trim().split("\n").at(-1) as string) as unknown,
      client: summary(await enforcers.client.stats()),
      server: summary(await enforcers.server.stats()),
    }),
  );
} finally {
  await lab.destroy();
  await pki.destroy();
}
