/**
 * One sidecar in its own process, so its CPU time and RSS can be measured alone. The parent sends
 * `{ start: StartMessage }` over IPC and gets `{ started: { inbound, targets } }`; `{ usage: true }`
 * answers `{ usage: { cpuSeconds, rssBytes } }`.
 */
import { parseBundle } from "../../core/svid/bundle.ts";
import { policySet } from "../../test/support/sidecar-mesh.ts";
import type { Sidecar } from "../../sidecar/sidecar.ts";
import { startSidecar } from "../../sidecar/sidecar.ts";
import { CredentialHolder, PeerDirectoryHolder, PolicyHolder } from "../../sidecar/state.ts";
import pino from "pino";

export interface StartMessage {
  readonly trustDomain: string;
  readonly privateKeyPem: string;
  readonly certChainPem: string;
  readonly bundleJson: string;
  readonly policyYaml: string;
  readonly targets: readonly { host: string; port: number; protocol: "http1" | "h2" }[];
  readonly peers: readonly {
    address: string;
    port: number;
    spiffeId: string;
    labels: Record<string, string>;
    sidecarPort: number;
  }[];
}

type Message = { start: StartMessage } | { usage: true };

const send = (m: unknown): void => {
  process.send?.(m);
};

// Exit normally on SIGTERM so that a --cpu-prof profile is written.
process.once("SIGTERM", () => process.exit(0));

let sidecar: Sidecar | undefined;

/** mTLS handshakes completed so far (both sides): a proxy that reuses its hop makes few. */
async function handshakes(): Promise<number> {
  if (!sidecar) return 0;
  const metric = await sidecar.metrics.tlsHandshakes.get();
  return metric.values.filter((v) => v.labels.result === "ok").reduce((sum, v) => sum + v.value, 0);
}

process.on("message", (raw: Message) => {
  if ("usage" in raw) {
    const cpu = process.cpuUsage();
    void handshakes().then((count) =>
      send({
        usage: {
          cpuSeconds: (cpu.user + cpu.system) / 1e6,
          rssBytes: process.memoryUsage().rss,
          peakRssBytes: process.resourceUsage().maxRSS * 1024,
          handshakes: count,
        },
      }),
    );
    return;
  }
  const m = raw.start;
  const peers = new PeerDirectoryHolder();
  peers.replace(
    m.peers.map((p) => [
      { address: p.address, port: p.port },
      {
        identity: { spiffeId: p.spiffeId, trustDomain: m.trustDomain, labels: p.labels },
        sidecar: { host: "127.0.0.1", port: p.sidecarPort },
        mtls: true,
      },
    ]),
  );
  startSidecar({
    config: {
      mode: "explicit",
      inbound: { host: "127.0.0.1", port: 0 },
      admin: { port: 0 },
      outbound: {
        targets: m.targets.map((t) => ({
          port: 0,
          destination: { host: t.host, port: t.port },
          protocol: t.protocol,
        })),
      },
    },
    credentials: new CredentialHolder({
      privateKeyPem: m.privateKeyPem,
      certChainPem: m.certChainPem,
      bundle: parseBundle(m.trustDomain, m.bundleJson),
    }),
    policy: new PolicyHolder({ trustDomain: m.trustDomain, policies: policySet(m.policyYaml) }),
    peers,
    flows: { report: () => undefined },
    logger: pino({ level: "warn" }, pino.destination(2)),
  }).then(
    (s) => {
      sidecar = s;
      send({ started: { inbound: s.inbound.port, targets: s.outboundTargets.map((t) => t.port) } });
    },
    (err: Error) => {
      process.stderr.write(`${err.stack}\n`);
      process.exit(1);
    },
  );
});
