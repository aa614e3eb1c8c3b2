/**
 * `npm run demo` end to end: the command itself, as a user (or CI) runs it, in non-interactive mode.
 * Its table must show every expected verdict, and nothing it made may be left behind — after a full
 * run, after Ctrl-C in the middle of start-up, and after Ctrl-C at a terminal running `npm run demo`
 * (the signal reaches npm, the shell, the demo and every process it started, all at once).
 */
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { run } from "../../examples/demo/exec.ts";
import { REPO_ROOT } from "../../examples/demo/mesh.ts";

interface DemoRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the demo command; `interruptOn` sends SIGINT when a stdout line matches it. */
function runDemo(args: string[], timeoutMs: number, interruptOn?: RegExp): Promise<DemoRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      ["--import", "tsx", join(REPO_ROOT, "examples/demo/main.ts"), ...args],
      {
        cwd: REPO_ROOT,
        env: { ...process.env, CI: "" },
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    let stdout = "";
    let stderr = "";
    let interrupted = false;
    child.stdout.on("data", (chunk: Buffer) => {
      stdout += chunk.toString();
      if (interruptOn && !interrupted && interruptOn.test(stdout)) {
        interrupted = true;
        child.kill("SIGINT");
      }
    });
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`demo did not finish within ${timeoutMs} ms\n${stdout}\n${stderr}`));
    }, timeoutMs);
    child.once("exit", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** Process ids still in process group `pgid`, but for `except` (the test's own helpers). */
async function groupMembers(pgid: number): Promise<string[]> {
  const ps = await run(["ps", "-eo", "pid=,pgid=,args="]);
  return ps.stdout
    .split("\n")
    .map((line) => line.trim().split(/\s+/))
    .filter(([, group]) => Number(group) === pgid)
    .map((fields) => fields.join(" "));
}

async function leftovers(prefix: string): Promise<string[]> {
  const namespaces = (await run(["ip", "netns", "list"])).stdout
    .split("\n")
    .map((line) => line.split(" ")[0] ?? "")
    .filter((name) => name.startsWith(prefix));
  const link = await run(["ip", "link", "show", `${prefix}cp`]);
  const marker = `/run/sigil-demo/${prefix}`;
  return [
    ...namespaces,
    ...(link.code === 0 ? [`${prefix}cp`] : []),
    ...(existsSync(marker) ? [marker] : []),
  ];
}

function workDirOf(stdout: string): string {
  const m = /work directory (\S+)/.exec(stdout);
  if (!m) throw new Error(`the demo did not say where its work directory is:\n${stdout}`);
  return m[1]!;
}

describe.sequential("npm run demo", () => {
  it("runs to completion with --once, every expected verdict in its table, and cleans up", async () => {
    const prefix = `sg${randomBytes(2).toString("hex")}-`;
    const demo = await runDemo(
      [
        "--once",
        "--prefix",
        prefix,
        "--subnet",
        "202",
        "--grpc-port",
        "0",
        "--http-port",
        "0",
        "--ready-timeout",
        "240",
      ],
      280_000,
    );
    expect(demo.code, `${demo.stdout}\n${demo.stderr}`).toBe(0);
    const out = demo.stdout;
    expect(out).toMatch(
      /source → destination\s+request\s+client saw\s+verdict\s+encrypted\s+deciding policy/,
    );
    // The table's rows: everything between its rule line and the blank line after it.
    const lines = out.split("\n");
    const rule = lines.findIndex((line) => line.startsWith("──"));
    const end = lines.indexOf("", rule);
    const table = lines.slice(rule + 1, end === -1 ? undefined : end);
    expect(table).toHaveLength(12);
    const row = (route: string, request: string) =>
      table.find((line) => line.includes(route) && line.includes(request)) ?? "";

    expect(row("web → api:8080", "curl GET /api/orders")).toMatch(
      /^ok .*HTTP 200\s+allow\s+yes \(TLS, sigil\/1;http1;8080\)/,
    );
    expect(row("web → api:8080", "curl POST /api/orders")).toMatch(/^ok .*HTTP 201\s+allow\s+yes \(TLS/);
    expect(row("web → api:8080", "curl GET /admin/users")).toMatch(/^ok .*HTTP 403\s+DENY at web\s+not sent/);
    expect(row("web → api:8080", "/api/../admin/users")).toMatch(/^ok .*HTTP 403\s+DENY at web/);
    expect(row("web → api:50051", "gRPC Orders/GetOrder  ")).toMatch(
      /^ok .*gRPC 7 PERMISSION_DENIED\s+DENY at web/,
    );
    // db:5432 is PERMISSIVE and on the fast path: decided in the handshake, payload not encrypted.
    expect(row("api → db:5432", "SELECT id FROM orders")).toMatch(
      /^ok .*allow\s+no: fast path, identity in the SYN\s+out: api-ingress\/egress\/0; in: db-ingress\/ingress\/0/,
    );
    expect(row("web → db:5432", "SELECT version()")).toMatch(/^ok .*DENY at web/);
    expect(row("rogue → api:8080", "curl GET /api/orders")).toMatch(
      /^ok .*HTTP 403\s+DENY at api\s+yes \(TLS/,
    );
    expect(row("rogue → db:5432", "SELECT * FROM users")).toMatch(
      /^ok .*connection refused\s+DENY at db\s+no payload \(refused in the handshake\)/,
    );
    // The policy file added while the mesh runs turns the gRPC call from denied to allowed.
    expect(row("web → api:50051", "+grpc-orders.yaml")).toMatch(
      /^ok .*gRPC OK\s+allow\s+yes \(TLS, sigil\/1;h2;50051\).*web-grpc-egress/,
    );
    // The quarantine of the story: a label on web, quarantine.yaml refuses it, then its removal.
    expect(out).toMatch(/quarantining web: sigil workload label web vuln\.critical=3/);
    expect(row("web → api:8080", "(web vuln.critical=3)")).toMatch(
      /^ok .*HTTP 403\s+DENY at (web|api)\s.*quarantine(-egress\/egress|\/ingress)\/0/,
    );
    expect(row("web → api:8080", "(label removed)")).toMatch(/^ok .*HTTP 200\s+allow\s+yes \(TLS/);
    expect(out).toMatch(
      /every verdict as expected \(12 requests\); nothing crossed the wire in the clear except the fast path's payload on db:5432 \(PERMISSIVE\)/,
    );
    expect(out).not.toMatch(/^FAIL/m);

    expect(await leftovers(prefix)).toEqual([]);
    expect(existsSync(workDirOf(out))).toBe(false);
  }, 300_000);

  it("removes everything it made when interrupted with Ctrl-C during start-up", async () => {
    const prefix = `sg${randomBytes(2).toString("hex")}-`;
    const demo = await runDemo(
      ["--prefix", prefix, "--subnet", "203", "--grpc-port", "0", "--http-port", "0"],
      120_000,
      /starting the control plane/,
    );
    expect(demo.stdout).toContain("cleaning up");
    expect(demo.code).toBe(0);
    expect(await leftovers(prefix)).toEqual([]);
    expect(existsSync(workDirOf(demo.stdout))).toBe(false);
  }, 150_000);

  it("Ctrl-C at a terminal running `npm run demo` removes the running mesh and ends every process", async () => {
    const prefix = `sg${randomBytes(2).toString("hex")}-`;
    // Its own process group, as a terminal's foreground job: the interrupt goes to the whole group.
    const npm = spawn(
      "npm",
      [
        "run",
        "--silent",
        "demo",
        "--",
        "--prefix",
        prefix,
        "--subnet",
        "204",
        "--grpc-port",
        "0",
        "--http-port",
        "0",
        "--ready-timeout",
        "240",
      ],
      { cwd: REPO_ROOT, env: { ...process.env, CI: "" }, stdio: ["ignore", "pipe", "pipe"], detached: true },
    );
    const group = npm.pid!;
    let stdout = "";
    let stderr = "";
    npm.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    const exited = new Promise<string>((resolve) =>
      npm.once("exit", (code, signal) => resolve(signal ?? `exit ${code}`)),
    );
    try {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`mesh not up in time\n${stdout}\n${stderr}`)),
          300_000,
        );
        npm.stdout.on("data", (chunk: Buffer) => {
          stdout += chunk.toString();
          if (stdout.includes("Press Ctrl-C")) {
            clearTimeout(timer);
            resolve();
          }
        });
        void exited.then(() =>
          reject(new Error(`the demo ended before it was interrupted\n${stdout}\n${stderr}`)),
        );
      });
      expect(await leftovers(prefix)).not.toEqual([]);
      process.kill(-group, "SIGINT");
      const how = await Promise.race([
        exited,
        new Promise<never>((_, reject) =>
          setTimeout(
            () => reject(new Error(`npm still running 90 s after Ctrl-C\n${stdout}\n${stderr}`)),
            90_000,
          ),
        ),
      ]);
      // npm ends itself with the signal its script was interrupted by, once the script has exited.
      expect(["exit 0", "SIGINT"], `${how}\n${stdout}\n${stderr}`).toContain(how);
      expect(stdout).toContain("cleaning up");
      // Everything went before npm returned the prompt: nothing is left to poll for.
      expect(await groupMembers(group)).toEqual([]);
      expect(await leftovers(prefix)).toEqual([]);
      expect(existsSync(workDirOf(stdout))).toBe(false);
    } finally {
      if ((await groupMembers(group)).length > 0) process.kill(-group, "SIGKILL");
    }
  }, 420_000);
});
