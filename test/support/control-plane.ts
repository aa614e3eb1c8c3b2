/**
 * A real control plane for suites that run sidecars against it: loopback only, ephemeral ports,
 * its data and a watched policy directory inside one temporary directory that `close()` removes.
 */
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pino from "pino";
import type { Logger } from "pino";
import { controlPlaneSpiffeId } from "../../controlplane/ca/authority.ts";
import { startControlPlane } from "../../controlplane/control-plane.ts";
import type { ControlPlane, ControlPlaneConfig } from "../../controlplane/control-plane.ts";
import type { AgentOptionsInput } from "../../sidecar/agent/options.ts";
import { IdentityClient } from "../../sidecar/identity/identity-client.ts";
import { RotationManager } from "../../sidecar/identity/rotation.ts";

export interface TestControlPlane {
  readonly cp: ControlPlane;
  /** The control plane's data directory (its CA, tokens, admin token file). */
  readonly dataDir: string;
  /** The watched policy directory. */
  readonly policyDir: string;
  /** The CA bundle that the control plane's serving certificate chains to, PEM. */
  readonly caPem: string;
  /** Its gRPC address (identity signing, ADS, flows). */
  readonly grpcTarget: string;
  /** Writes (or replaces) one policy file in the watched directory. */
  writePolicy(file: string, yaml: string): Promise<void>;
  close(): Promise<void>;
}

/**
 * Starts a control plane whose policy directory holds `policies` (file name → YAML) from the start.
 * Simulated sidecars register 198.18.0.0/15 addresses over loopback streams, so registered
 * addresses are trusted to their first claimant unless `options.addressClaims` says otherwise.
 */
export async function startTestControlPlane(
  prefix: string,
  policies: Readonly<Record<string, string>>,
  log: Logger = pino({ level: "silent" }),
  options: Pick<ControlPlaneConfig, "addressClaims" | "kubernetes"> & {
    readonly http?: Pick<ControlPlaneConfig["http"], "tls" | "signInAttemptsPerMinute">;
  } = {},
): Promise<TestControlPlane> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  const dataDir = join(dir, "cp");
  const policyDir = join(dir, "policies");
  const writePolicy = (file: string, yaml: string): Promise<void> => writeFile(join(policyDir, file), yaml);
  let cp: ControlPlane | undefined;
  try {
    await mkdir(policyDir);
    for (const [file, yaml] of Object.entries(policies)) await writePolicy(file, yaml);
    cp = await startControlPlane({
      dataDir,
      policyDir,
      grpc: { host: "127.0.0.1", port: 0 },
      xdsPlaintext: undefined,
      http: { host: "127.0.0.1", port: 0, ...options.http },
      serverNames: ["localhost"],
      addressClaims: options.addressClaims ?? "first-claim",
      kubernetes: options.kubernetes,
      log,
    });
    const started = cp;
    return {
      cp: started,
      dataDir,
      policyDir,
      caPem: await readFile(started.bundlePath, "utf8"),
      grpcTarget: `127.0.0.1:${started.grpc.port}`,
      writePolicy,
      async close() {
        try {
          await started.close();
        } finally {
          await rm(dir, { recursive: true, force: true });
        }
      },
    };
  } catch (error) {
    await cp?.close();
    await rm(dir, { recursive: true, force: true });
    throw error;
  }
}

/**
 * Settings of a sidecar agent joining `controlPlane` with `joinToken` in explicit mode, its listeners
 * on loopback's ephemeral ports, quiet and quick to drain; `extra` adds or overrides.
 */
export function loopbackAgentInput(
  controlPlane: Pick<TestControlPlane, "cp" | "grpcTarget">,
  joinToken: string,
  workloadName: string,
  extra: Partial<AgentOptionsInput> = {},
): AgentOptionsInput {
  return {
    controlPlane: controlPlane.grpcTarget,
    controlPlaneCa: controlPlane.cp.bundlePath,
    joinToken,
    workloadName,
    mode: "explicit",
    inboundHost: "127.0.0.1",
    inboundPort: 0,
    adminPort: 0,
    drainTimeoutMs: 1_000,
    logLevel: "silent",
    ...extra,
  };
}

/** Something a suite closes at the end, in the reverse of the order it was registered. */
export type Closer = () => void | Promise<void>;

/**
 * Attests a workload to the control plane with a join token over real gRPC/TLS, as a sidecar does,
 * and returns its started rotation (current credentials: `rotation.current()`). The identity client
 * and the rotation are pushed onto `closers`.
 */
export async function attestWithJoinToken(
  controlPlane: Pick<TestControlPlane, "cp" | "caPem" | "grpcTarget">,
  joinToken: string,
  closers: Closer[],
): Promise<RotationManager> {
  const { cp } = controlPlane;
  const client = new IdentityClient({
    address: controlPlane.grpcTarget,
    caPem: controlPlane.caPem,
    serverSpiffeId: controlPlaneSpiffeId(cp.trustDomain),
  });
  closers.push(() => client.close());
  const rotation = new RotationManager({
    client,
    trustDomain: cp.trustDomain,
    bootstrapProof: () => Promise.resolve({ joinToken }),
  });
  closers.push(() => rotation.stop());
  await rotation.start();
  return rotation;
}
