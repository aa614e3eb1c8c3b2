import { execFile } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { mkdir, writeFile } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { CertificateAuthority } from "../../controlplane/ca/authority.ts";
import { generateP256 } from "../../controlplane/ca/keys.ts";
import { bundleToDocument } from "../../core/svid/bundle.ts";
import type { SidecarSpec } from "./sigil-spec.ts";
import type { BackendPorts, PairPorts } from "./topology.ts";
import { GRPC_METHOD, HTTP_PATH } from "./workload.ts";
import { http2Engine } from "./http2-engine.ts";

/**
 * The Sigil pair: two sidecar processes in explicit mode with SVIDs from Sigil's own CA. The client
 * side (app=web) has one outbound listener per backend port; the server side (app=api) terminates
 * mTLS, checks the peer's identity and labels, method and path against policy, and forwards.
 * Authorization runs on both sides: egress at the client, ingress at the server.
 */

const here = dirname(fileURLToPath(import.meta.url));
const run = promisify(execFile);
const REPO = join(here, "..", "..");
export const TRUST_DOMAIN = "sigil.local";

export function sigilPolicy(backend: BackendPorts): string {
  return `apiVersion: sigil.dev/v1
kind: AuthorizationPolicy
metadata: { name: bench-api-ingress }
spec:
  selector: { matchLabels: { app: api } }
  ingress:
    - action: allow
      from: [ { matchLabels: { app: web } } ]
      ports: [ ${backend.h1} ]
      http: { methods: [ POST ], paths: [ "${HTTP_PATH}" ] }
    - action: allow
      from: [ { matchLabels: { app: web } } ]
      ports: [ ${backend.grpc} ]
      http: { methods: [ POST ], paths: [ "${GRPC_METHOD}" ] }
    - action: allow
      from: [ { matchLabels: { app: web } } ]
      ports: [ ${backend.iperf} ]
---
apiVersion: sigil.dev/v1
kind: AuthorizationPolicy
metadata: { name: bench-web-egress }
spec:
  selector: { matchLabels: { app: web } }
  egress:
    - action: allow
      to: [ { matchLabels: { app: api } } ]
      ports: [ ${backend.h1}, ${backend.grpc}, ${backend.iperf} ]
`;
}

/**
 * Where one harness run (named by its temporary directory) keeps its sidecar bundle: inside
 * node_modules, where the files read at run time resolve, and per run so two runs at once never
 * overwrite each other's.
 */
export function bundleDirFor(runDir: string): string {
  return join(REPO, "node_modules", ".cache", "sigil-bench", basename(runDir));
}

/**
 * Bundles the sidecar entry as the images do (scripts/bundle.sh), next to node_modules so that
 * files read at run time resolve. A separate module loaded with --import runs first: the sidecar's
 * cap on heap growth, which the image's entry point imports first and this entry does not.
 */
export async function bundleSidecar(runDir: string): Promise<{ entry: string; preload: string }> {
  const [entry, preload] = await Promise.all([
    bundleInto(runDir, join(here, "sigil-sidecar.ts"), "sigil-sidecar.mjs"),
    bundleInto(runDir, join(REPO, "sidecar", "proxy", "heap-growth-first.ts"), "preload.mjs"),
  ]);
  return { entry, preload };
}

/** Bundles one entry module into the run's bundle directory as `name`; returns the bundle's path. */
export async function bundleInto(runDir: string, source: string, name: string): Promise<string> {
  const out = bundleDirFor(runDir);
  await mkdir(out, { recursive: true });
  const file = join(out, name);
  await run(join(REPO, "scripts", "bundle.sh"), [source, file]);
  return file;
}

/**
 * Issues both SVIDs and writes the two sidecars' spec files; returns their paths. `loopDelay`: the
 * sidecars measure event-loop delay (loop-monitor.ts).
 */
export async function writeSigilSpecs(
  dir: string,
  ports: PairPorts & { clientInbound: number; clientAdmin: number; serverAdmin: number },
  backend: BackendPorts,
  loopDelay: boolean,
): Promise<{ client: string; server: string }> {
  const ca = await CertificateAuthority.open({ dataDir: join(dir, "sigil-ca"), trustDomain: TRUST_DOMAIN });
  const bundle = bundleToDocument(ca.bundle());
  const credentials = async (name: string, app: string) => {
    const { keys, privatePem } = await generateP256();
    const issued = await ca.issueSvid({
      publicKey: keys.publicKey,
      spiffeId: `spiffe://${TRUST_DOMAIN}/workload/${name}`,
      labels: [{ key: "app", value: app, provenance: "static" }],
      ttlSeconds: 3600,
    });
    return {
      privateKeyPem: privatePem,
      certChainPem: issued.chain.map((der) => new X509Certificate(der).toString()).join(""),
    };
  };
  const policyYaml = sigilPolicy(backend);
  // SIGIL_HTTP2_ENGINE=sessions|relay picks the sidecars' HTTP/2 engine (default: the config's).
  const variable = process.env.SIGIL_HTTP2_ENGINE;
  const engine = variable === undefined ? undefined : http2Engine(variable, "SIGIL_HTTP2_ENGINE");
  const base = { mode: "explicit", logLevel: "warn", ...(engine ? { http2Engine: engine } : {}) };
  // SIGIL_SIDECAR_WORKERS=N runs each sidecar's data path in N worker processes (default 1).
  const workers = Number(process.env.SIGIL_SIDECAR_WORKERS ?? "1");
  if (!Number.isInteger(workers) || workers < 1)
    throw new Error(`SIGIL_SIDECAR_WORKERS: ${process.env.SIGIL_SIDECAR_WORKERS} is not a whole number ≥ 1`);
  const server: SidecarSpec = {
    trustDomain: TRUST_DOMAIN,
    config: {
      ...base,
      inbound: { host: "127.0.0.1", port: ports.serverH1 },
      admin: { port: ports.serverAdmin },
    },
    ...(await credentials("api", "api")),
    bundle,
    policyYaml,
    peers: [],
    workers,
    loopDelay,
  };
  // Each listener declares the framing the application speaks, as a deployment would: nothing waits
  // on protocol detection, and iperf3 (which speaks first) is never mistaken for a slow client.
  const targets = [
    [ports.clientH1, backend.h1, "http1"],
    [ports.clientGrpc, backend.grpc, "h2"],
    [ports.clientTcp, backend.iperf, "tcp"],
  ] as const;
  const client: SidecarSpec = {
    trustDomain: TRUST_DOMAIN,
    config: {
      ...base,
      inbound: { host: "127.0.0.1", port: ports.clientInbound },
      admin: { port: ports.clientAdmin },
      outbound: {
        targets: targets.map(([port, dest, protocol]) => ({
          host: "127.0.0.1",
          port,
          destination: { host: "127.0.0.1", port: dest },
          protocol,
        })),
      },
    },
    ...(await credentials("web", "web")),
    bundle,
    policyYaml,
    workers,
    loopDelay,
    peers: targets.map(([, dest]) => ({
      address: "127.0.0.1",
      port: dest,
      spiffeId: `spiffe://${TRUST_DOMAIN}/workload/api`,
      labels: { app: "api" },
      sidecarHost: "127.0.0.1",
      sidecarPort: ports.serverH1,
    })),
  };
  const files = { client: join(dir, "sigil-client.json"), server: join(dir, "sigil-server.json") };
  await writeFile(files.client, JSON.stringify(client));
  await writeFile(files.server, JSON.stringify(server));
  return files;
}
