/**
 * A real etcd cluster (Debian's etcd-server) on loopback ports picked at start, one temporary
 * directory for every member's data. Members can be killed, stopped and started again; `close()`
 * kills every process and removes the directory, and an exit hook kills them if a suite dies first.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface EtcdCluster {
  /** Client URLs, one per member. */
  readonly endpoints: readonly string[];
  kill(member: number): Promise<void>;
  start(member: number): Promise<void>;
  /** Resolves once `member` (or every running member) reports healthy, bounded by `timeoutMs`. */
  healthy(member?: number, timeoutMs?: number): Promise<void>;
  close(): Promise<void>;
}

const live = new Set<ChildProcess>();
process.once("exit", () => {
  for (const p of live) p.kill("SIGKILL");
});

/** Ports the kernel hands out now; etcd binds them a moment later. */
export async function freePorts(count: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from(
      { length: count },
      () =>
        new Promise<Server>((resolve, reject) => {
          const s = createServer();
          s.once("error", reject);
          s.listen(0, "127.0.0.1", () => resolve(s));
        }),
    ),
  );
  const ports = servers.map((s) => (s.address() as { port: number }).port);
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  return ports;
}

export async function startEtcdCluster(size = 3): Promise<EtcdCluster> {
  const dir = await mkdtemp(join(tmpdir(), "sg-etcd-"));
  const ports = await freePorts(size * 2);
  const token = `sigil-${process.pid}-${Date.now()}`;
  const members = Array.from({ length: size }, (_, i) => ({
    name: `m${i}`,
    client: `http://127.0.0.1:${ports[2 * i]}`,
    peer: `http://127.0.0.1:${ports[2 * i + 1]}`,
    process: undefined as ChildProcess | undefined,
    log: [] as string[],
  }));
  const initialCluster = members.map((m) => `${m.name}=${m.peer}`).join(",");

  const start = (i: number): Promise<void> => {
    const m = members[i];
    if (!m) throw new Error(`no etcd member ${i}`);
    if (m.process) return Promise.resolve();
    const child = spawn(
      "etcd",
      [
        `--name=${m.name}`,
        `--data-dir=${join(dir, m.name)}`,
        `--listen-client-urls=${m.client}`,
        `--advertise-client-urls=${m.client}`,
        `--listen-peer-urls=${m.peer}`,
        `--initial-advertise-peer-urls=${m.peer}`,
        `--initial-cluster=${initialCluster}`,
        `--initial-cluster-token=${token}`,
        "--initial-cluster-state=new",
        // A loaded machine: elections slow enough not to flap, fast enough to recover in seconds.
        "--heartbeat-interval=100",
        "--election-timeout=1000",
        "--log-level=error",
      ],
      { stdio: ["ignore", "ignore", "pipe"] },
    );
    child.stderr?.on("data", (d: Buffer) => m.log.push(d.toString()));
    live.add(child);
    child.once("exit", () => {
      live.delete(child);
      if (m.process === child) m.process = undefined;
    });
    m.process = child;
    return Promise.resolve();
  };

  const stopProcess = (child: ChildProcess): Promise<void> =>
    new Promise((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) return resolve();
      child.once("exit", () => resolve());
      child.kill("SIGKILL");
    });

  const healthyOne = async (i: number, deadline: number): Promise<void> => {
    const m = members[i];
    if (!m) throw new Error(`no etcd member ${i}`);
    for (;;) {
      try {
        const res = await fetch(`${m.client}/health`, { signal: AbortSignal.timeout(1000) });
        const body = (await res.json()) as { health?: string };
        if (body.health === "true") return;
      } catch {
        // Not listening yet, or no leader yet.
      }
      if (Date.now() > deadline)
        throw new Error(
          `etcd member ${m.name} not healthy in time; its log:\n${m.log.join("").slice(-2000)}`,
        );
      await new Promise((r) => setTimeout(r, 100));
    }
  };

  const cluster: EtcdCluster = {
    endpoints: members.map((m) => m.client),
    async kill(i) {
      const child = members[i]?.process;
      if (child) await stopProcess(child);
    },
    start,
    async healthy(member, timeoutMs = 20_000) {
      const deadline = Date.now() + timeoutMs;
      const which =
        member === undefined ? members.map((_, i) => i).filter((i) => members[i]?.process) : [member];
      await Promise.all(which.map((i) => healthyOne(i, deadline)));
    },
    async close() {
      await Promise.all(members.map((m) => (m.process ? stopProcess(m.process) : undefined)));
      await rm(dir, { recursive: true, force: true });
    },
  };
  try {
    for (let i = 0; i < size; i++) await start(i);
    await cluster.healthy();
    return cluster;
  } catch (err) {
    await cluster.close();
    throw err;
  }
}
