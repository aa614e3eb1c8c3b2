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
import { EnforcerProcess } from "../../test/e2e/fastpath-support/enforcer-process.ts";
import { OutputLines, REPO_ROOT, jsonLine } from "../../test/e2e/fastpath-support/netns.ts";
import { TestPki } from "../../test/e2e/fastpath-support/pki.ts";
import type { EnforcerStats } from "../../sidecar/fastpath/enforcer.ts";

const opts = new Command()
  .option("--queues <n>", "NFQUEUE queues (worker threads) per enforcer", "2")
  .option("--connects <n>", "sequential connects", "2000")
  .option("--rate", "16 parallel connectors for 5 s instead of sequential connects")
  .parse()
  .opts<{ queues: string; connects: string; rate?: boolean }>();

const ECHO = 7000;
const POLICY = `
apiVersion: sigil.dev/v1
kind: AuthorizationPolicy
metadata: { name: db-ingress }
spec:
  selector: { matchLabels: { app: db } }
  ingress:
    - { action: allow, from: [ { matchLabels: { app: web } } ], ports: [ ${ECHO} ] }
---
apiVersion: sigil.dev/v1
kind: PeerAuthentication
metadata: { name: db-plain-l4 }
spec:
  selector: { matchLabels: { app: db } }
  mode: PERMISSIVE
`;

function summary(stats: EnforcerStats): object {
  const perKind = Object.fromEntries(
    Object.entries(stats.counters.timing)
      .filter(([, t]) => t.count > 0)
      .map(([kind, t]) => [
        kind,
        [t.decideUs / t.count, t.decideCpuUs / Math.max(t.cpuSamples, 1), t.verdictUs / t.count].map(
          (x) => Math.round(x * 10) / 10,
        ),
      ]),
  );
  return { perKind, queues: Object.fromEntries(stats.queues.map((q) => [q.queue, q.received])) };
}

const lab = await NetnsLab.create(["client", "server"]);
const pki = await TestPki.create();
try {
  const client = lab.host("client");
  const server = lab.host("server");
  for (const h of [client, server]) {
    await h.ns.execOk([
      "sysctl",
      "-q",
      "-w",
      "net.ipv4.tcp_tw_reuse=1",
      "net.ipv4.ip_local_port_range=10000 65000",
    ]);
  }
  const apps = new OutputLines(
    server.ns.spawn([
      process.execPath,
      "--import",
      "tsx",
      `${REPO_ROOT}test/e2e/fastpath-support/servers.ts`,
      "8080",
      String(ECHO),
    ]),
  );
  await apps.waitFor((l) => (jsonLine(l)?.event === "ready" ? true : undefined));
  const policyFile = await pki.file("policy.yaml", POLICY);
  const queueCount = Number(opts.queues);
  const serverEnforcer = await EnforcerProcess.start(server.ns, pki, "db", {
    identity: await pki.identity("db", { app: "db" }),
    policyFile,
    inboundPorts: [ECHO],
    queueFirst: 10,
    queueCount,
  });
  const clientEnforcer = await EnforcerProcess.start(client.ns, pki, "web", {
    identity: await pki.identity("web", { app: "web" }),
    policyFile,
    outboundPorts: [ECHO],
    queueFirst: 20,
    queueCount,
  });
  const probe = await client.ns.execOk(
    [
      process.execPath,
      "--import",
      "tsx",
      `${REPO_ROOT}bench/fastpath/connect-probe.ts`,
      ...(opts.rate
        ? ["rate", server.ipv4, String(ECHO), "5", "16"]
        : ["latency", server.ipv4, String(ECHO), opts.connects]),
    ],
    { timeoutMs: 300_000 },
  );
  console.log(
    JSON.stringify({
      queues: queueCount,
      probe: JSON.parse(probe.trim().split("\n").at(-1) as string) as unknown,
      client: summary(await clientEnforcer.stats()),
      server: summary(await serverEnforcer.stats()),
    }),
  );
} finally {
  await lab.destroy();
  await pki.destroy();
}
