/**
 * `sigil sidecar --workers 2` as real processes (web → api, explicit mode, loopback) against a real
 * control plane: both workers of each sidecar serve (per-worker decision counts on the primary's
 * admin), a policy change reaches every worker, an SVID rotation reaches the certificates workers
 * present, a killed worker is replaced and traffic goes on, flows from workers reach the control
 * plane, SIGTERM drains every worker, and a primary that dies takes its workers with it.
 */
import { spawn } from "node:child_process";
import type { ChildProcessWithoutNullStreams } from "node:child_process";
import { once } from "node:events";
import { request as httpRequest } from "node:http";
import { join } from "node:path";
import { createInterface } from "node:readline";
import tls from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ControlPlane } from "../../controlplane/control-plane.ts";
import { apiIngressPolicy } from "../support/api-ingress.ts";
import { startTestControlPlane } from "../support/control-plane.ts";
import type { TestControlPlane } from "../support/control-plane.ts";
import type { FlowRecord } from "../../core/flow.ts";
import type { HttpApp } from "../support/sidecar-apps.ts";
import { startHttpApp } from "../support/sidecar-apps.ts";
import { readyEvent } from "../../core/logger.ts";

const CLI = join(import.meta.dirname, "../../cmd/sigil/main.ts");
const TSX = join(import.meta.dirname, "../../node_modules/.bin/tsx");

interface RunningSidecar {
  readonly child: ChildProcessWithoutNullStreams;
  readonly spiffeId: string;
  readonly admin: number;
  readonly inbound: number;
  readonly outboundTargets: readonly number[];
  readonly stderr: string[];
}

interface WorkerStatus {
  readonly worker: number;
  readonly pid: number;
  readonly state: string;
}

let cp: ControlPlane;
let controlPlane: TestControlPlane;
let app: HttpApp;
const children: ChildProcessWithoutNullStreams[] = [];
/** The sidecars' primary processes (tsx's children): killing tsx alone would leave them running. */
const primaries: number[] = [];

/** Waits for the primary's line with message `msg` on stderr (workers log theirs without a worker count). */
async function logLine(
  s: { child: ChildProcessWithoutNullStreams; stderr: string[] },
  msg: string,
): Promise<string> {
  const signal = AbortSignal.timeout(20_000);
  for (;;) {
    const hit = s.stderr
      .join("")
      .split("\n")
      .find((l) => l.includes(`"msg":"${msg}"`) && l.includes(`"workers":`));
    if (hit) return hit;
    await once(s.child.stderr, "data", { signal });
  }
}

async function startSidecar(name: string, flags: string[]): Promise<RunningSidecar> {
  const { token } = await cp.identity.tokens.create({ name, labels: { app: name }, ttlSeconds: 600 });
  const child = spawn(
    TSX,
    [
      CLI,
      "sidecar",
      "--control-plane",
      `127.0.0.1:${cp.grpc.port}`,
      "--control-plane-ca",
      cp.bundlePath,
      "--join-token",
      token,
      "--workload-name",
      name,
      "--mode",
      "explicit",
      "--inbound-port",
      "0",
      "--admin-port",
      "0",
      "--workers",
      "2",
      "--drain-timeout-ms",
      "2000",
      "--log-level",
      "info",
      ...flags,
    ],
    { stdio: "pipe" },
  );
  children.push(child);
  const stderr: string[] = [];
  child.stderr.on("data", (c: Buffer) => stderr.push(c.toString()));
  const ready = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name}: no ready line; ${stderr.join("")}`)), 60_000);
    createInterface({ input: child.stdout }).once("line", (line) => {
      clearTimeout(timer);
      resolve(line);
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`${name} exited ${code}: ${stderr.join("")}`));
    });
  });
  const started = JSON.parse(await logLine({ child, stderr }, "sidecar started")) as {
    admin: { port: number };
    inbound: { port: number };
    outboundTargets: { port: number }[];
  };
  primaries.push((await adminJson<{ pid: number }>(started.admin.port, "/config_dump")).pid);
  return {
    child,
    spiffeId: String(readyEvent(ready)?.spiffeId),
    admin: started.admin.port,
    inbound: started.inbound.port,
    outboundTargets: started.outboundTargets.map((t) => t.port),
    stderr,
  };
}

function get(port: number, path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    // agent: false: a new connection per request, so the listeners hand requests to both workers.
    const req = httpRequest({ host: "127.0.0.1", port, path, method: "GET", agent: false }, (res) => {
      res.resume();
      res.on("end", () => resolve(res.statusCode ?? 0));
      res.on("error", reject);
    });
    req.setTimeout(10_000, () => req.destroy(new Error(`GET ${path} timed out`)));
    req.on("error", reject);
    req.end();
  });
}

async function statuses(port: number, path: string, n: number): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push(await get(port, path));
  return out;
}

async function adminJson<T>(port: number, path: string): Promise<T> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`);
  return (await res.json()) as T;
}

async function workersOf(s: RunningSidecar): Promise<WorkerStatus[]> {
  return (await adminJson<{ workers: WorkerStatus[] }>(s.admin, "/config_dump")).workers;
}

/** `sigil_sidecar_worker_requests_total` by worker id. */
async function decisionsPerWorker(s: RunningSidecar): Promise<Map<string, number>> {
  const text = await (await fetch(`http://127.0.0.1:${s.admin}/stats/prometheus`)).text();
  const out = new Map<string, number>();
  for (const m of text.matchAll(/^sigil_sidecar_worker_requests_total\{worker="(\d+)"\} (\d+)$/gm))
    out.set(m[1] as string, Number(m[2]));
  return out;
}

/** The serial of the certificate api's inbound listener presents to a new connection. */
function presentedSerial(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({
      host: "127.0.0.1",
      port,
      rejectUnauthorized: false,
      ALPNProtocols: [`sigil/1;http1;${app.port}`],
    });
    socket.setTimeout(10_000, () => socket.destroy(new Error("TLS handshake timed out")));
    socket.once("secureConnect", () => {
      resolve(socket.getPeerX509Certificate()?.serialNumber.toLowerCase() ?? "");
      socket.destroy();
    });
    socket.once("error", reject);
  });
}

function normalSerial(serial: string): string {
  return serial.toLowerCase().replace(/^0+/, "");
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function flowWhere(test: (r: FlowRecord) => boolean): Promise<FlowRecord> {
  const signal = AbortSignal.timeout(10_000);
  for (;;) {
    const hit = cp.flows.query({}).find(test);
    if (hit) return hit;
    await once(cp.flows, "flows", { signal });
  }
}

beforeAll(async () => {
  controlPlane = await startTestControlPlane("sigil-workers-", {
    "api.yaml": apiIngressPolicy({ methods: ["GET"], paths: ["/allowed/**"] }),
  });
  cp = controlPlane.cp;
  app = await startHttpApp();
});

afterAll(async () => {
  // Workers stop by themselves once their primary is gone.
  for (const pid of primaries) if (alive(pid)) process.kill(pid, "SIGKILL");
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
  await app?.close();
  await controlPlane?.close();
});

describe("sigil sidecar --workers 2", { timeout: 120_000 }, () => {
  let api: RunningSidecar;
  let web: RunningSidecar;
  let outbound: number;

  it("serves a mesh pair through both workers of each sidecar", async () => {
    api = await startSidecar("api", [
      "--app-port",
      String(app.port),
      "--advertise-address",
      "127.0.0.1",
      "--svid-ttl",
      "12",
    ]);
    web = await startSidecar("web", ["--outbound", `127.0.0.1:0=127.0.0.1:${app.port}`]);
    outbound = web.outboundTargets[0] ?? 0;
    for (const s of [api, web]) {
      expect((await fetch(`http://127.0.0.1:${s.admin}/ready`)).status).toBe(200);
      const workers = await workersOf(s);
      expect(workers).toHaveLength(2);
      expect(workers.every((w) => w.state === "serving" && alive(w.pid))).toBe(true);
    }
    // web learns api's address from the directory (relayed to its workers) before the hop is mTLS.
    await expect.poll(() => get(outbound, "/allowed/one"), { timeout: 15_000 }).toBe(200);
    expect(await statuses(outbound, "/allowed/two", 8)).toEqual(Array(8).fill(200));
    for (const s of [web, api]) {
      const perWorker = await decisionsPerWorker(s);
      expect(perWorker.size).toBe(2);
      for (const count of perWorker.values()) expect(count).toBeGreaterThan(0);
    }
  });

  it("brings flow records from the workers to the control plane", async () => {
    const flow = await flowWhere(
      (r) => r.reporter.spiffeId === api.spiffeId && r.http?.path === "/allowed/two",
    );
    expect(flow).toMatchObject({ verdict: "allow", direction: "ingress", encrypted: true });
    expect(flow.source.spiffeId).toBe(web.spiffeId);
  });

  it("applies a policy change in every worker", async () => {
    expect(await get(outbound, "/allowed/three")).toBe(200);
    await controlPlane.writePolicy("api.yaml", apiIngressPolicy({ methods: ["GET"], paths: ["/only-this"] }));
    await expect.poll(() => get(outbound, "/allowed/three"), { timeout: 15_000 }).toBe(403);
    expect(await statuses(outbound, "/allowed/three", 8)).toEqual(Array(8).fill(403));
    await controlPlane.writePolicy(
      "api.yaml",
      apiIngressPolicy({ methods: ["GET"], paths: ["/allowed/**"] }),
    );
    await expect.poll(() => get(outbound, "/allowed/four"), { timeout: 15_000 }).toBe(200);
    expect(await statuses(outbound, "/allowed/four", 8)).toEqual(Array(8).fill(200));
  });

  it("has every worker present the rotated SVID", async () => {
    const held = async (): Promise<string> =>
      normalSerial(
        (await adminJson<{ identity: { serial: string } }>(api.admin, "/config_dump")).identity.serial,
      );
    // The admin's serial and the presented one are comparable (same certificate between rotations).
    await expect
      .poll(async () => (await held()) === normalSerial(await presentedSerial(api.inbound)), {
        timeout: 20_000,
        interval: 100,
      })
      .toBe(true);
    const before = await held();
    await expect.poll(held, { timeout: 30_000, interval: 200 }).not.toBe(before);
    // New connections alternate between the workers: none presents the old certificate any more.
    const seen: string[] = [];
    for (let i = 0; i < 6; i++) seen.push(normalSerial(await presentedSerial(api.inbound)));
    expect(seen.filter((s) => s === before)).toEqual([]);
  });

  it("replaces a killed worker and traffic goes on", async () => {
    const [victim, survivor] = await workersOf(api);
    process.kill(victim?.pid as number, "SIGKILL");
    await expect
      .poll(
        async () => {
          const now = await workersOf(api);
          return now.filter((w) => w.state === "serving" && w.pid !== victim?.pid).length;
        },
        { timeout: 20_000, interval: 100 },
      )
      .toBe(2);
    const now = await workersOf(api);
    expect(now.map((w) => w.pid)).toContain(survivor?.pid);
    expect(now.map((w) => w.pid)).not.toContain(victim?.pid);
    expect(api.stderr.join("")).toContain("data-path worker died: restarting it");
    expect(await statuses(outbound, "/allowed/five", 8)).toEqual(Array(8).fill(200));
    expect((await decisionsPerWorker(api)).size).toBe(2);
  });

  it("drains every worker on SIGTERM and exits 0", async () => {
    const pids = (await workersOf(api)).map((w) => w.pid);
    const exited = once(api.child, "exit");
    api.child.kill("SIGTERM");
    const [code] = (await exited) as [number | null];
    expect(code).toBe(0);
    for (const pid of pids) await expect.poll(() => alive(pid), { timeout: 10_000 }).toBe(false);
  });

  it("takes its workers down when the primary dies", async () => {
    const dump = await adminJson<{ pid: number; workers: WorkerStatus[] }>(web.admin, "/config_dump");
    const pids = dump.workers.map((w) => w.pid);
    expect(pids.every(alive)).toBe(true);
    const exited = once(web.child, "exit");
    process.kill(dump.pid, "SIGKILL");
    await exited;
    for (const pid of pids) await expect.poll(() => alive(pid), { timeout: 10_000 }).toBe(false);
  });
});
