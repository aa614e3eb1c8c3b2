/**
 * Brings the demo mesh up and down: the topology, the control plane on the host side of the bridge, an
 * application, `sigil init` and a sidecar (as the sidecar user) per workload. Everything is started
 * through the same commands an operator would run; startMesh() resolves only once every sidecar says it
 * is ready, and Mesh.stop() undoes all of it whatever state it is in.
 */
import { chmod, copyFile, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { CommandError, inNetns, run, runOk, type ExecOptions, type ExecResult, type RunAs } from "./exec.ts";
import type { Cleanup } from "./cleanup.ts";
import type { ApiAccess } from "./flows.ts";
import { tailLogs } from "./logs.ts";
import { Supervisor, type Managed } from "./processes.ts";
import { Topology, WORKLOADS, type WorkloadHost, type WorkloadName } from "./topology.ts";
import { appUser, chownTo, ensureProxyUser } from "./users.ts";
import { MARK_MASK, hex } from "../../sidecar/fastpath/marks.ts";
import { readyEvent } from "../../core/logger.ts";

/** The JSON line a Sigil process prints on stdout once it serves (core/logger.ts `announceReady`). */
const READY_LINE = /^\{.*"event":"ready".*\}$/;

export const REPO_ROOT = fileURLToPath(new URL("../../", import.meta.url));
/** The installed `sigil` command (package.json `bin`). */
const SIGIL = join(REPO_ROOT, "bin/sigil.mjs");
const CONTROL_PLANE = join(REPO_ROOT, "cmd/sigil-controlplane/main.ts");
const APPS = join(REPO_ROOT, "examples/demo/apps");

export class MeshStartError extends Error {
  override name = "MeshStartError";
}

export const TRUST_DOMAIN = "sigil.local";

/** What each workload runs and which of its ports the sidecar protects inbound. */
export const APP_PORTS: Record<WorkloadName, number[]> = {
  web: [],
  api: [8080, 50051],
  db: [5432],
  rogue: [],
};

/**
 * The ports each sidecar enforces in the TCP handshake (the L4 fast path) instead of proxying them:
 * db serves 5432 that way (examples/policies/db.yaml makes the port PERMISSIVE, which the fast path
 * needs: it authenticates both ends but does not encrypt), and the workloads that dial it put their
 * identity into the SYN: api (allowed) and rogue (refused in the handshake). web has no fast path, so
 * its connections to 5432 stay with its sidecar, which denies them on the way out.
 */
export const FAST_PATH_PORTS: Record<WorkloadName, number[]> = {
  web: [],
  api: [5432],
  db: [5432],
  rogue: [5432],
};

export interface MeshOptions {
  prefix: string;
  subnet: number;
  /** Control plane gRPC port on the host's bridge address; 0 picks a free one. */
  grpcPort: number;
  /** Control plane HTTP API / UI port on 127.0.0.1; 0 picks a free one. */
  httpPort: number;
  /** Policies copied into the watched policy directory. */
  policySource: string;
  /** Progress lines for the person watching. */
  progress: (line: string) => void;
  /** Readiness deadline for each process. */
  readyTimeoutMs: number;
}

export interface ControlPlaneInfo {
  grpc: string;
  /** Base URL of the HTTP API and UI, e.g. http://127.0.0.1:15080 */
  http: string;
  /** The API's admin token (bearer), and the file the control plane keeps it in. */
  token: string;
  tokenFile: string;
  bundle: string;
}

export class Mesh {
  readonly sidecars = new Map<WorkloadName, Managed>();
  readonly spiffeIds = new Map<WorkloadName, string>();
  readonly apps = new Map<WorkloadName, Managed>();
  controlPlane: ControlPlaneInfo | null = null;

  constructor(
    readonly options: MeshOptions,
    readonly topology: Topology,
    readonly supervisor: Supervisor,
    readonly workDir: string,
    readonly policyDir: string,
    readonly proxyUser: RunAs,
    readonly appUser: RunAs,
  ) {}

  host(name: WorkloadName): WorkloadHost {
    return this.topology.host(name);
  }

  /** Runs an ordinary command in a workload's namespace as its application user. */
  exec(name: WorkloadName, argv: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
    return run(inNetns(this.host(name).netns, argv, opts.as ?? this.appUser), {
      ...opts,
      env: opts.env ?? appEnv(),
    });
  }

  /** The command line that runs a TypeScript file of this repository with Node. */
  tsArgv(file: string, args: readonly string[] = []): string[] {
    return [process.execPath, "--import", "tsx", file, ...args];
  }

  /** Runs `sigil <args>` as the operator does, against this mesh's control plane; throws when it fails. */
  async sigil(args: readonly string[]): Promise<ExecResult> {
    const cp = this.controlPlane;
    if (cp === null) throw new Error("the control plane is not running");
    const argv = [...sigilArgv(), ...args, "--api", cp.http, "--token-file", cp.tokenFile];
    const result = await run(argv, { timeoutMs: 30_000 });
    if (result.code !== 0) throw new CommandError(argv, result);
    return result;
  }

  spiffeId(name: WorkloadName): string {
    return this.spiffeIds.get(name) ?? `spiffe://${TRUST_DOMAIN}/workload/${name}`;
  }
}

/** `sigil`, run by this Node: the command an operator would type, independent of PATH. */
function sigilArgv(): string[] {
  return [process.execPath, SIGIL];
}

function appEnv(): NodeJS.ProcessEnv {
  return { PATH: process.env.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin", HOME: "/tmp", LANG: "C.UTF-8" };
}

/**
 * Builds and starts the whole mesh. Every piece registers its undo step on `cleanup` as soon as it
 * exists, so running `cleanup` (after success, an error or Ctrl-C) removes exactly what was made.
 */
export async function startMesh(options: MeshOptions, cleanup: Cleanup): Promise<Mesh> {
  const say = options.progress;
  const [proxyUser, app] = await Promise.all([ensureProxyUser(), appUser()]);
  const workDir = await mkdtemp(join(tmpdir(), "sigil-demo-"));
  cleanup.add(`remove ${workDir}`, () => rm(workDir, { recursive: true, force: true }));
  await chmod(workDir, 0o755);
  const policyDir = join(workDir, "policies");
  const logDir = join(workDir, "logs");
  await Promise.all([
    mkdir(logDir),
    mkdir(policyDir),
    mkdir(join(workDir, "sidecars"), { mode: 0o755 }),
    mkdir(join(workDir, "controlplane"), { mode: 0o700 }),
  ]);
  await copyPolicies(options.policySource, policyDir);
  say(`work directory ${workDir} (policies, logs, state; removed on exit)`);

  say(
    `building namespaces ${WORKLOADS.map((w) => options.prefix + w).join(", ")} on 198.18.${options.subnet}.0/24`,
  );
  const topology = await Topology.create({ prefix: options.prefix, subnet: options.subnet });
  cleanup.add("remove namespaces, veths and bridge", () => topology.destroy());
  const supervisor = new Supervisor(logDir);
  cleanup.add("stop processes", () => supervisor.stopAll());
  const mesh = new Mesh(options, topology, supervisor, workDir, policyDir, proxyUser, app);

  try {
    say(
      `starting the control plane on ${topology.hostAddress}:${options.grpcPort} (HTTP on 127.0.0.1:${options.httpPort})`,
    );
    mesh.controlPlane = await startControlPlane(mesh);

    say("starting the applications (api: HTTP 8080 + gRPC 50051, db: TCP 5432)");
    await startApps(mesh);

    say(
      `capturing traffic with \`sigil init\` and starting one sidecar per workload as uid ${proxyUser.uid}`,
    );
    await Promise.all(WORKLOADS.map((name) => startWorkloadSidecar(mesh, name)));
  } catch (error) {
    // The work directory (and the logs in it) goes with the cleanup: say what the processes said first.
    throw new MeshStartError(`${(error as Error).message}\n${await tailLogs(logDir)}`);
  }
  return mesh;
}

async function copyPolicies(from: string, to: string): Promise<void> {
  const files = (await readdir(from)).filter((f) => f.endsWith(".yaml") || f.endsWith(".yml"));
  if (files.length === 0) throw new Error(`no policy files (*.yaml) in ${from}`);
  await Promise.all(files.map((f) => copyFile(join(from, f), join(to, f))));
}

async function startControlPlane(mesh: Mesh): Promise<ControlPlaneInfo> {
  const { options, topology } = mesh;
  // The control plane is the one process on the host itself (everything else dies with its
  // namespace): if the demo is killed outright, the kernel ends it too instead of leaving it holding
  // the ports for the next run.
  const cp = mesh.supervisor.start(
    "controlplane",
    [
      "setpriv",
      "--pdeathsig",
      "SIGKILL",
      "--",
      ...mesh.tsArgv(CONTROL_PLANE, [
        "--data-dir",
        join(mesh.workDir, "controlplane"),
        "--trust-domain",
        TRUST_DOMAIN,
        "--policy-dir",
        mesh.policyDir,
        "--grpc-host",
        topology.hostAddress,
        "--grpc-port",
        String(options.grpcPort),
        "--http-host",
        "127.0.0.1",
        "--http-port",
        String(options.httpPort),
        "--mode",
        "enforce",
      ]),
    ],
    { cwd: REPO_ROOT },
  );
  const ready = readyEvent((await cp.waitForLine(READY_LINE, options.readyTimeoutMs))[0]);
  const { grpc, http, bundle } = ready as { grpc: string; http: string; bundle: string };
  // The sidecars run as their own user and cannot read the control plane's data directory.
  const sidecarBundle = join(mesh.workDir, "controlplane-ca.pem");
  await copyFile(bundle, sidecarBundle);
  await chmod(sidecarBundle, 0o644);
  const tokenFile = join(mesh.workDir, "controlplane", "http-token");
  const token = (await readFile(tokenFile, "utf8")).trim();
  return { grpc, http: `http://${http}`, token, tokenFile, bundle: sidecarBundle };
}

async function startApps(mesh: Mesh): Promise<void> {
  const spawnApp = (name: WorkloadName, file: string, ready: RegExp) => {
    const managed = mesh.supervisor.start(
      `app-${name}`,
      inNetns(mesh.host(name).netns, mesh.tsArgv(join(APPS, file)), mesh.appUser),
      { cwd: REPO_ROOT, env: appEnv() },
    );
    mesh.apps.set(name, managed);
    return managed.waitForLine(ready, mesh.options.readyTimeoutMs);
  };
  await Promise.all([
    spawnApp("api", "api-server.ts", /^api listening/),
    spawnApp("db", "db-server.ts", /^db listening/),
  ]);
}

/** Asks the control plane for a one-time join token naming the workload and its labels. */
export async function createJoinToken(api: ApiAccess, name: WorkloadName): Promise<string> {
  const body = JSON.stringify({ name, labels: { app: name, env: "demo" }, ttlSeconds: 600 });
  const response = await fetch(`${api.http}/api/tokens`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${api.token}` },
    body,
    signal: AbortSignal.timeout(10_000),
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`POST /api/tokens for ${name}: HTTP ${response.status} ${text.trim()}`);
  const token = (JSON.parse(text) as { token?: unknown }).token;
  if (typeof token !== "string" || token === "")
    throw new Error(`POST /api/tokens for ${name}: no token in ${text}`);
  return token;
}

async function startWorkloadSidecar(mesh: Mesh, name: WorkloadName): Promise<void> {
  const cp = mesh.controlPlane;
  if (cp === null) throw new Error("the control plane is not running");
  const host = mesh.host(name);
  const dir = join(mesh.workDir, "sidecars", name);
  await mkdir(dir, { mode: 0o700 });
  const tokenFile = join(dir, "join-token");
  await writeFile(tokenFile, `${await createJoinToken(cp, name)}\n`, { mode: 0o600 });

  // What an init container or VM setup step does before the workload starts: capture every TCP
  // connection in and out of the namespace except the sidecar's own. With the fast path, the sidecar
  // later re-applies the same file with its handshake rules in one transaction.
  const fastPath = FAST_PATH_PORTS[name];
  const captureConfig = join(dir, "capture.yaml");
  await writeFile(captureConfig, captureYaml(mesh.proxyUser, fastPath.length > 0), { mode: 0o644 });
  await chownTo(dir, mesh.proxyUser);
  await runOk(inNetns(host.netns, [...sigilArgv(), "init", "--config", captureConfig]), {
    cwd: REPO_ROOT,
    timeoutMs: mesh.options.readyTimeoutMs,
  });

  const args = [
    "sidecar",
    "--control-plane",
    cp.grpc,
    "--control-plane-ca",
    cp.bundle,
    "--join-token-file",
    tokenFile,
    "--workload-name",
    name,
    "--mode",
    "captured",
    "--advertise-address",
    host.ipv4,
    "--log-level",
    "info",
  ];
  for (const port of APP_PORTS[name]) args.push("--app-port", String(port));
  if (fastPath.length > 0) {
    args.push("--fast-path-ports", fastPath.join(","), "--capture-config", captureConfig);
  }
  // The fast path installs iptables rules and binds NFQUEUE: its sidecar keeps CAP_NET_ADMIN.
  const caps = fastPath.length > 0 ? ["net_admin"] : [];
  const sidecar = mesh.supervisor.start(
    `sidecar-${name}`,
    inNetns(host.netns, [...sigilArgv(), ...args], mesh.proxyUser, caps),
    { cwd: REPO_ROOT, env: { ...appEnv(), HOME: dir } },
  );
  mesh.sidecars.set(name, sidecar);
  const ready = readyEvent((await sidecar.waitForLine(READY_LINE, mesh.options.readyTimeoutMs))[0]);
  const spiffeId = String(ready?.spiffeId);
  mesh.spiffeIds.set(name, spiffeId);
  mesh.options.progress(`  ${name}: sidecar ready as ${spiffeId}`);
}

/** The `capture:` section `sigil init` applies (and a fast-path sidecar re-applies with its rules). */
function captureYaml(proxy: RunAs, fastPath: boolean): string {
  const lines = ["capture:", `  proxyUid: ${proxy.uid}`, `  proxyGid: ${proxy.gid}`];
  // Connections whose handshake the fast path decided carry its verdict in these mark bits and skip the proxy.
  if (fastPath) lines.push(`  fastPathMarkMask: ${hex(MARK_MASK)}`);
  return `${lines.join("\n")}\n`;
}
