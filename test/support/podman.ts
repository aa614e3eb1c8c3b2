/**
 * Podman for container suites, configured for tests only: a containers.conf the suite writes
 * (runc, cgroupfs, no default ulimits, file events) reached through CONTAINERS_CONF, never the
 * machine's own. A network of the suite's own in 198.18.0.0/15; everything made is removed by
 * `close()`, which the suite calls on failure too.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { run, runOk, type ExecResult } from "./netns.ts";

const CONTAINERS_CONF = `[containers]
default_ulimits = []
log_driver = "k8s-file"
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
`;

export interface Podman {
  readonly env: NodeJS.ProcessEnv;
  readonly dir: string;
  readonly network: string;
  /** The network's gateway: the host as containers reach it. */
  readonly gateway: string;
  readonly subnetPrefix: string;
  podman(args: string[], timeoutMs?: number): Promise<string>;
  tryPodman(args: string[], timeoutMs?: number): Promise<ExecResult>;
  /** Starts the pods of one YAML file on the suite's network with a fixed address. */
  play(yaml: string, ip: string): Promise<void>;
  close(): Promise<void>;
}

/** Why podman cannot run containers here, or null when it can. */
export async function podmanUnavailable(): Promise<string | null> {
  if (process.getuid?.() !== 0) return "container suites need root (iptables inside pods, podman networks)";
  const dir = await mkdtemp(join(tmpdir(), "sigil-podman-probe-"));
  try {
    await writeFile(join(dir, "containers.conf"), CONTAINERS_CONF);
    const env = { ...process.env, CONTAINERS_CONF: join(dir, "containers.conf") };
    const r = await run(["podman", "info", "--format", "{{.Host.OCIRuntime.Name}}"], {
      env,
      timeoutMs: 30_000,
    }).catch((err: Error) => ({ code: -1, stdout: "", stderr: err.message, signal: null }));
    if (r.code !== 0) return `podman cannot run here: ${r.stderr.trim().split("\n")[0]}`;
    return null;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

export async function startPodman(label: string, thirdOctet: number): Promise<Podman> {
  const dir = await mkdtemp(join(tmpdir(), `sigil-${label}-`));
  await writeFile(join(dir, "containers.conf"), CONTAINERS_CONF);
  const env = { ...process.env, CONTAINERS_CONF: join(dir, "containers.conf") };
  const network = `sigil-${label}-${process.pid}`;
  const subnetPrefix = `198.18.${thirdOctet}`;
  const podman = (args: string[], timeoutMs = 60_000) => runOk(["podman", ...args], { env, timeoutMs });
  const tryPodman = (args: string[], timeoutMs = 60_000) => run(["podman", ...args], { env, timeoutMs });
  const files: string[] = [];
  const close = async (): Promise<void> => {
    for (const file of files.reverse()) await tryPodman(["kube", "down", file], 90_000);
    await tryPodman(["network", "rm", "-f", network]);
    await rm(dir, { recursive: true, force: true });
  };
  try {
    // A network of an earlier run killed before its cleanup would hold the subnet.
    await tryPodman(["network", "rm", "-f", network]);
    await podman([
      "network",
      "create",
      "--subnet",
      `${subnetPrefix}.0/24`,
      "--gateway",
      `${subnetPrefix}.1`,
      network,
    ]);
  } catch (err) {
    await close();
    throw err;
  }
  return {
    env,
    dir,
    network,
    gateway: `${subnetPrefix}.1`,
    subnetPrefix,
    podman,
    tryPodman,
    async play(yaml, ip) {
      const file = join(dir, `pod-${files.length}.yaml`);
      files.push(file);
      await writeFile(file, yaml);
      await podman(["kube", "play", "--network", network, "--ip", ip, file], 180_000);
    },
    close,
  };
}
