/**
 * One Sigil sidecar as its own process (so its CPU and memory are measured alone), in explicit
 * mode, from a spec file the harness writes: configuration, SVID and key, trust bundle, policy,
 * and the peer directory. Stops by draining on SIGTERM. Its metrics also carry GC pauses and, when
 * the spec asks, event-loop delay (loop-monitor.ts) for the harness to read over each measured window.
 *
 * With `workers` > 1 in the spec (SIGIL_SIDECAR_WORKERS when the harness writes it) the data path
 * runs in that many cluster workers, each this same file re-run (sidecar/worker-processes).
 *
 *   node sigil-sidecar.mjs <spec.json>
 */
import cluster from "node:cluster";
import { readFileSync } from "node:fs";
import pino from "pino";
import { compilePolicySet, formatPolicyError, parsePolicyDocuments } from "../../core/policy/index.ts";
import { parseBundle } from "../../core/svid/bundle.ts";
import { drainOnSignal, startSidecar } from "../../sidecar/sidecar.ts";
import { CredentialHolder, PeerDirectoryHolder, PolicyHolder } from "../../sidecar/inputs/state.ts";
import { startSidecarWorkers } from "../../sidecar/worker-processes/primary.ts";
import { runSidecarWorker } from "../../sidecar/worker-processes/worker.ts";
import { monitorLoop } from "./loop-monitor.ts";
import { sidecarSpecSchema } from "./sigil-spec.ts";

if (cluster.isWorker) runSidecarWorker();
else await serve(process.argv[2]);

async function serve(file: string | undefined): Promise<void> {
  if (!file) {
    console.error("usage: sigil-sidecar <spec.json>");
    process.exit(2);
  }
  const spec = sidecarSpecSchema.parse(JSON.parse(readFileSync(file, "utf8")));
  const parsed = parsePolicyDocuments(spec.policyYaml, file);
  if (!parsed.ok) throw new Error(parsed.errors.map(formatPolicyError).join("\n"));
  const log = pino({ name: "bench-sidecar", level: "warn" }, pino.destination(2));
  const peers = spec.peers.map(
    (p) =>
      [
        { address: p.address, port: p.port },
        {
          identity: { spiffeId: p.spiffeId, trustDomain: spec.trustDomain, labels: p.labels },
          sidecar: { host: p.sidecarHost, port: p.sidecarPort },
          mtls: true,
        },
      ] as const,
  );
  const common = {
    config: spec.config,
    credentials: new CredentialHolder({
      certChainPem: spec.certChainPem,
      privateKeyPem: spec.privateKeyPem,
      bundle: parseBundle(spec.trustDomain, spec.bundle),
    }),
    policy: new PolicyHolder({
      trustDomain: spec.trustDomain,
      policies: compilePolicySet(parsed.documents.map((d) => d.document)),
    }),
    // Flow records are produced for every decision (the cost is measured); nothing collects them here.
    flows: { report: () => undefined },
    logger: log,
  };
  const sidecar =
    spec.workers > 1
      ? await startSidecarWorkers({ ...common, workers: spec.workers, peers })
      : await startSidecar({
          ...common,
          peers: (() => {
            const directory = new PeerDirectoryHolder();
            directory.replace(peers);
            return directory;
          })(),
        });
  drainOnSignal(sidecar, log);
  const stopMonitor = monitorLoop(sidecar.metrics.registry, { delay: spec.loopDelay });
  for (const signal of ["SIGTERM", "SIGINT"] as const) process.once(signal, stopMonitor);
}
