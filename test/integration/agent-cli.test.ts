/**
 * `sigil sidecar` as a process: flags and a config file merged, the ready line on stdout once it
 * holds an SVID and a policy set, `/ready` 200, and a clean exit (0) on SIGTERM. Bad settings are
 * refused with the key named.
 */
import { spawn } from "node:child_process";
import type { ChildProcessWithoutNullStreams } from "node:child_process";
import { once } from "node:events";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import pino from "pino";
import { readyEvent } from "../../core/logger.ts";
import { startControlPlane } from "../../controlplane/control-plane.ts";
import type { ControlPlane } from "../../controlplane/control-plane.ts";

const CLI = join(import.meta.dirname, "../../cmd/sigil/main.ts");
const TSX = join(import.meta.dirname, "../../node_modules/.bin/tsx");

let cp: ControlPlane;
let dir: string;
const children: ChildProcessWithoutNullStreams[] = [];

function sigil(args: string[]): ChildProcessWithoutNullStreams {
  const child = spawn(TSX, [CLI, ...args], { stdio: "pipe" });
  children.push(child);
  return child;
}

function firstLine(child: ChildProcessWithoutNullStreams, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const lines = createInterface({ input: child.stdout });
    const timer = setTimeout(() => reject(new Error("no line on stdout")), timeoutMs);
    lines.once("line", (line) => {
      clearTimeout(timer);
      resolve(line);
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`exited ${code} before printing`));
    });
  });
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "sigil-agent-cli-"));
  cp = await startControlPlane({
    dataDir: join(dir, "cp"),
    grpc: { host: "127.0.0.1", port: 0 },
    xdsPlaintext: undefined,
    http: { host: "127.0.0.1", port: 0 },
    serverNames: ["localhost"],
    log: pino({ level: "silent" }),
  });
});

afterAll(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
  await cp?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe("sigil sidecar", () => {
  it("prints its ready line once it has an SVID and a policy set, then drains and exits 0 on SIGTERM", async () => {
    const { token } = await cp.identity.tokens.create({
      name: "cli",
      labels: { app: "cli" },
      ttlSeconds: 600,
    });
    const spiffeId = "spiffe://sigil.local/workload/cli";
    const tokenFile = join(dir, "token");
    await writeFile(tokenFile, `${token}\n`);
    const config = join(dir, "sidecar.yaml");
    await writeFile(
      config,
      [
        `controlPlane: 127.0.0.1:${cp.grpc.port}`,
        `controlPlaneCa: ${cp.bundlePath}`,
        `joinTokenFile: ${tokenFile}`,
        "workloadName: cli",
        "mode: captured",
        "logLevel: warn",
      ].join("\n"),
    );
    // Flags override the file: explicit mode, ephemeral ports.
    const child = sigil([
      "sidecar",
      "--config",
      config,
      "--mode",
      "explicit",
      "--inbound-port",
      "0",
      "--admin-port",
      "0",
      "--app-port",
      "8080",
      "--log-level",
      "info",
    ]);
    const log: string[] = [];
    child.stderr.on("data", (c: Buffer) => log.push(c.toString()));
    const line = await firstLine(child, 30_000);
    expect(readyEvent(line)).toMatchObject({ msg: "sigil sidecar ready", spiffeId, level: "info" });
    // The admin port was ephemeral: the structured log on stderr names it.
    const startedLine = async (): Promise<string> => {
      const signal = AbortSignal.timeout(10_000);
      for (;;) {
        const hit = log
          .join("")
          .split("\n")
          .find((l) => l.includes('"msg":"sidecar started"'));
        if (hit) return hit;
        await once(child.stderr, "data", { signal });
      }
    };
    const started = JSON.parse(await startedLine()) as { admin: { port: number } };
    const ready = await fetch(`http://127.0.0.1:${started.admin.port}/ready`);
    expect(ready.status).toBe(200);
    const exited = once(child, "exit");
    child.kill("SIGTERM");
    const [code] = (await exited) as [number | null];
    expect(code).toBe(0);
  });

  it("refuses settings it cannot use and names the key", async () => {
    const child = sigil([
      "sidecar",
      "--control-plane",
      "nowhere",
      "--workload-name",
      "x",
      "--join-token",
      "t",
    ]);
    const err: string[] = [];
    child.stderr.on("data", (c: Buffer) => err.push(c.toString()));
    const [code] = (await once(child, "exit")) as [number | null];
    expect(code).not.toBe(0);
    // One JSON line, the refusal in its message.
    const lines = err.join("").trimEnd().split("\n");
    const fatal = lines.map((l) => JSON.parse(l) as { level: string; msg: string; err: { message: string } });
    expect(fatal).toHaveLength(1);
    expect(fatal[0]).toMatchObject({ level: "fatal", msg: "sidecar failed to start" });
    expect(fatal[0]?.err.message).toMatch(/controlPlane: "nowhere" is not host:port/);
    expect(fatal[0]?.err.message).toMatch(/controlPlaneCa/);
  });
});
