/**
 * A real control plane for suites that run sidecars against it: loopback only, ephemeral ports,
 * its data and a watched policy directory inside one temporary directory that `close()` removes.
 */
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pino from "pino";
import type { Logger } from "pino";
import { startControlPlane } from "../../controlplane/control-plane.ts";
import type { ControlPlane } from "../../controlplane/control-plane.ts";

export interface TestControlPlane {
  readonly cp: ControlPlane;
  /** Writes (or replaces) one policy file in the watched directory. */
  writePolicy(file: string, yaml: string): Promise<void>;
  close(): Promise<void>;
}

/** Starts a control plane whose policy directory holds `policies` (file name → YAML) from the start. */
export async function startTestControlPlane(
  prefix: string,
  policies: Readonly<Record<string, string>>,
  log: Logger = pino({ level: "silent" }),
): Promise<TestControlPlane> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  const policyDir = join(dir, "policies");
  const writePolicy = (file: string, yaml: string): Promise<void> => writeFile(join(policyDir, file), yaml);
  try {
    await mkdir(policyDir);
    for (const [file, yaml] of Object.entries(policies)) await writePolicy(file, yaml);
    const cp = await startControlPlane({
      dataDir: join(dir, "cp"),
      policyDir,
      grpc: { host: "127.0.0.1", port: 0 },
      xdsPlaintext: undefined,
      http: { host: "127.0.0.1", port: 0 },
      serverNames: ["localhost"],
      log,
    });
    return {
      cp,
      writePolicy,
      async close() {
        try {
          await cp.close();
        } finally {
          await rm(dir, { recursive: true, force: true });
        }
      },
    };
  } catch (error) {
    await rm(dir, { recursive: true, force: true });
    throw error;
  }
}

/** app=web may make GET requests to app=api on `paths` (the policy the agent and worker suites rewrite). */
export function apiIngressPolicy(paths: readonly string[]): string {
  return `apiVersion: sigil.dev/v1
kind: AuthorizationPolicy
metadata: { name: api-ingress }
spec:
  selector: { matchLabels: { app: api } }
  ingress:
    - action: allow
      from: [ { matchLabels: { app: web } } ]
      http: { methods: [GET], paths: [${paths.map((p) => JSON.stringify(p)).join(", ")}] }
`;
}
