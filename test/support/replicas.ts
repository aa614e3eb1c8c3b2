/**
 * Control-plane replicas as real processes (`cmd/sigil-controlplane/main.ts --etcd ...`) on loopback ports
 * chosen once, so a replica restarted after `kill -9` comes back at the same address. All share
 * one envelope key file and one admin token file, as an operator would set them up.
 */
import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePorts } from "./etcd-cluster.ts";
import { readyEvent } from "../../core/logger.ts";

export interface Replica {
  readonly index: number;
  readonly grpcTarget: string;
  readonly httpBase: string;
  readonly dataDir: string;
  readonly running: boolean;
}

export interface ReplicaSet {
  readonly replicas: readonly Replica[];
  readonly token: string;
  /** The admin token file every replica (and the CLI) reads. */
  readonly tokenFile: string;
  readonly grpcTargets: readonly string[];
  start(index: number): Promise<void>;
  /** SIGKILL, resolving once the process is gone. */
  kill(index: number): Promise<void>;
  api<T>(index: number, method: string, path: string, body?: unknown): Promise<{ status: number; body: T }>;
  close(): Promise<void>;
}

const live = new Set<ChildProcessWithoutNullStreams>();
process.once("exit", () => {
  for (const p of live) p.kill("SIGKILL");
});

export async function startReplicas(count: number, etcdEndpoints: readonly string[]): Promise<ReplicaSet> {
  const dir = await mkdtemp(join(tmpdir(), "sg-replicas-"));
  const keyFile = join(dir, "envelope.key");
  const tokenFile = join(dir, "http-token");
  const token = randomBytes(32).toString("hex");
  await writeFile(keyFile, randomBytes(32).toString("hex"), { mode: 0o600 });
  await writeFile(tokenFile, token, { mode: 0o600 });
  const ports = await freePorts(count * 2);
  const slots = Array.from({ length: count }, (_, index) => ({
    index,
    grpcPort: ports[2 * index] as number,
    httpPort: ports[2 * index + 1] as number,
    dataDir: join(dir, `r${index}`),
    child: undefined as ChildProcessWithoutNullStreams | undefined,
  }));

  const start = (index: number): Promise<void> => {
    const slot = slots[index];
    if (!slot) throw new Error(`no replica ${index}`);
    const child = spawn(
      process.execPath,
      [
        "--import",
        "tsx",
        "cmd/sigil-controlplane/main.ts",
        `--data-dir=${slot.dataDir}`,
        "--grpc-host=127.0.0.1",
        `--grpc-port=${slot.grpcPort}`,
        "--http-host=127.0.0.1",
        `--http-port=${slot.httpPort}`,
        `--http-token-file=${tokenFile}`,
        `--etcd=${etcdEndpoints.join(",")}`,
        `--envelope-key-file=${keyFile}`,
        `--replica-id=r${index}`,
        "--log-level=warn",
      ],
      { cwd: join(import.meta.dirname, "../.."), stdio: "pipe" },
    );
    slot.child = child;
    live.add(child);
    let stderr = "";
    child.stderr.on("data", (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
    return new Promise((resolve, reject) => {
      let out = "";
      const timer = setTimeout(() => fail(new Error("not ready within 45 s")), 45_000);
      const fail = (err: Error) => {
        clearTimeout(timer);
        reject(new Error(`replica r${index}: ${err.message}\n${stderr}`));
      };
      child.stdout.on("data", (d: Buffer) => {
        out += d.toString();
        if (out.split("\n").some((l) => readyEvent(l) !== null)) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.once("exit", (code, signal) => {
        live.delete(child);
        if (slot.child === child) slot.child = undefined;
        fail(new Error(`exited (${code ?? signal}) before ready`));
      });
    });
  };

  const kill = (index: number): Promise<void> => {
    const child = slots[index]?.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
    return new Promise((resolve) => {
      child.once("exit", () => resolve());
      child.kill("SIGKILL");
    });
  };

  const set: ReplicaSet = {
    get replicas() {
      return slots.map((s) => ({
        index: s.index,
        grpcTarget: `127.0.0.1:${s.grpcPort}`,
        httpBase: `http://127.0.0.1:${s.httpPort}`,
        dataDir: s.dataDir,
        running: s.child !== undefined,
      }));
    },
    token,
    tokenFile,
    grpcTargets: slots.map((s) => `127.0.0.1:${s.grpcPort}`),
    start,
    kill,
    async api<T>(index: number, method: string, path: string, body?: unknown) {
      const slot = slots[index];
      if (!slot) throw new Error(`no replica ${index}`);
      const text = typeof body === "string";
      const res = await fetch(`http://127.0.0.1:${slot.httpPort}${path}`, {
        method,
        headers: {
          authorization: `Bearer ${token}`,
          ...(body === undefined ? {} : { "content-type": text ? "application/yaml" : "application/json" }),
        },
        body: body === undefined ? undefined : text ? body : JSON.stringify(body),
        signal: AbortSignal.timeout(15_000),
      });
      const raw = await res.text();
      return { status: res.status, body: (raw.startsWith("{") ? JSON.parse(raw) : raw) as T };
    },
    async close() {
      await Promise.all(slots.map((s) => kill(s.index)));
      await rm(dir, { recursive: true, force: true });
    },
  };
  try {
    await Promise.all(slots.map((s) => start(s.index)));
    return set;
  } catch (err) {
    await set.close();
    throw err;
  }
}
