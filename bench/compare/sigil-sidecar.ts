/**
 * One Sigil sidecar as its own process (so its CPU and memory are measured alone), in explicit
 * mode, from a spec file the harness writes: configuration, SVID and key, trust bundle, policy,
 * and the peer directory. Stops by draining on SIGTERM. Its metrics also carry event-loop delay and
 * GC pauses (loop-monitor.ts) for the harness to read over each measured window.
 *
 *   node sigil-sidecar.mjs <spec.json>
 */
import { readFileSync } from "node:fs";
import pino from "pino";
import { compilePolicySet, formatPolicyError, parsePolicyDocuments } from "../../core/policy/index.ts";
import { parseBundle } from "../../core/svid/bundle.ts";
import { drainOnSignal, startSidecar } from "../../sidecar/sidecar.ts";
import { CredentialHolder, PeerDirectoryHolder, PolicyHolder } from "../../sidecar/state.ts";
import { monitorLoop } from "./loop-monitor.ts";
import { sidecarSpecSchema } from "./sigil-spec.ts";

const file = process.argv[2];
if (!file) {
  console.error("usage: sigil-sidecar <spec.json>");
  process.exit(2);
}
const spec = sidecarSpecSchema.parse(JSON.parse(readFileSync(file, "utf8")));
const parsed = parsePolicyDocuments(spec.policyYaml, file);
if (!parsed.ok) throw new Error(parsed.errors.map(formatPolicyError).join("\n"));
const log = pino({ name: "bench-sidecar", level: "warn" }, pino.destination(2));
const sidecar = await startSidecar({
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
  peers: (() => {
    const peers = new PeerDirectoryHolder();
    peers.replace(
      spec.peers.map((p) => [
        { address: p.address, port: p.port },
        {
          identity: { spiffeId: p.spiffeId, trustDomain: spec.trustDomain, labels: p.labels },
          sidecar: { host: p.sidecarHost, port: p.sidecarPort },
          mtls: true,
        },
      ]),
    );
    return peers;
  })(),
  // Flow records are produced for every decision (the cost is measured); nothing collects them here.
  flows: { report: () => undefined },
  logger: log,
});
drainOnSignal(sidecar, log);
const stopMonitor = monitorLoop(sidecar.metrics.registry);
for (const signal of ["SIGTERM", "SIGINT"] as const) process.once(signal, stopMonitor);
