import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readyEvent } from "../../core/logger.ts";

const READY = /^\{.*"event":"ready".*\}$/m;

let dataDir: string;
let child: ChildProcessWithoutNullStreams;
let stdout = "";
let ready: RegExpExecArray;

/** Resolves with the first match of `pattern` in the child's stdout; rejects on exit or after the timeout. */
function waitForStdout(pattern: RegExp, timeoutMs: number): Promise<RegExpExecArray> {
  return new Promise((resolve, reject) => {
    const check = () => {
      const m = pattern.exec(stdout);
      if (!m) return;
      cleanup();
      resolve(m);
    };
    const onExit = (code: number | null) => {
      cleanup();
      reject(new Error(`control plane exited (${code}) before printing its ready line`));
    };
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`no ready line within ${timeoutMs} ms; stdout: ${stdout}`));
    }, timeoutMs);
    const cleanup = () => {
      clearTimeout(timer);
      child.stdout.off("data", check);
      child.off("exit", onExit);
    };
    child.stdout.on("data", check);
    child.on("exit", onExit);
    check();
  });
}

/** Authorization as the admin, with the token the control plane created in its data directory. */
async function admin(): Promise<Record<string, string>> {
  return { authorization: `Bearer ${(await readFile(join(dataDir, "http-token"), "utf8")).trim()}` };
}

beforeAll(async () => {
  dataDir = await mkdtemp(join(tmpdir(), "sg-cpmain-"));
  child = spawn(
    process.execPath,
    [
      "--import",
      "tsx",
      "cmd/sigil-controlplane/main.ts",
      "--data-dir",
      dataDir,
      "--grpc-host",
      "127.0.0.1",
      "--grpc-port",
      "0",
      "--http-host",
      "127.0.0.1",
      "--http-port",
      "0",
      "--mode",
      "observe",
      "--log-level",
      "warn",
    ],
    { cwd: join(import.meta.dirname, "../..") },
  );
  child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
  child.stderr.resume();
  ready = await waitForStdout(READY, 30_000);
}, 40_000);

afterAll(async () => {
  if (child.exitCode === null) child.kill("SIGKILL");
  await rm(dataDir, { recursive: true, force: true });
});

describe("npm run controlplane", () => {
  it("prints its ready line with the bound addresses and the bundle in the data dir", async () => {
    const line = readyEvent(ready[0]) as {
      grpc: string;
      http: string;
      bundle: string;
      webUi: string;
      tokenFile: string;
    };
    const { grpc: grpcAddr, http: httpAddr, bundle } = line;
    expect(grpcAddr).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(bundle).toBe(join(dataDir, "bundle.pem"));
    const pem = await readFile(bundle as string, "utf8");
    expect(new X509Certificate(pem).ca).toBe(true);

    const health = await fetch(`http://${httpAddr}/healthz`);
    expect(health.status).toBe(200);
    const tokenFile = join(dataDir, "http-token");
    expect(line).toMatchObject({ msg: "sigil control plane ready", webUi: `http://${httpAddr}/`, tokenFile });
    const token = (await readFile(tokenFile, "utf8")).trim();
    expect(stdout).not.toContain(token);
    expect((await fetch(`http://${httpAddr}/api/mode`)).status).toBe(401);
    const mode = (await (await fetch(`http://${httpAddr}/api/mode`, { headers: await admin() })).json()) as {
      mesh?: string;
    };
    expect(JSON.stringify(mode)).toContain('"observe"');
  });

  it("defaults to the repository's example policies", async () => {
    const httpAddr = String(readyEvent(ready[0])?.http);
    const res = (await (
      await fetch(`http://${httpAddr}/api/policies`, { headers: await admin() })
    ).json()) as {
      policies: unknown[];
    };
    expect(res.policies.length).toBeGreaterThan(0);
  });

  it("exits 0 on SIGTERM", async () => {
    const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
    child.kill("SIGTERM");
    expect(await exited).toBe(0);
  });
});
