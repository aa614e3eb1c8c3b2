/**
 * Logs a pipeline can parse: a real control plane and a real sidecar as processes, real traffic
 * through the sidecar (an allowed and a denied request, a TLS client without a certificate on its
 * inbound listener), and every line either wrote on stdout or stderr parsed as one JSON object
 * with a label level, the stable keys, access-log lines as `--access-log` asks, and a reason code
 * beside OpenSSL's text for the failed handshake.
 */
import { spawn } from "node:child_process";
import type { ChildProcessWithoutNullStreams } from "node:child_process";
import { once } from "node:events";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import tls from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readyEvent } from "../../core/logger.ts";

const ROOT = join(import.meta.dirname, "../..");

interface Proc {
  readonly child: ChildProcessWithoutNullStreams;
  readonly out: string[];
  readonly err: string[];
}

const procs: Proc[] = [];
let dir: string;
let app: http.Server;
let appPort: number;
let cp: Proc;
let sidecar: Proc;
let sidecarReady: Record<string, unknown>;

function start(args: string[]): Proc {
  const child = spawn(process.execPath, ["--import", "tsx", ...args], { cwd: ROOT, stdio: "pipe" });
  const p = { child, out: [] as string[], err: [] as string[] };
  child.stdout.on("data", (d: Buffer) => p.out.push(d.toString()));
  child.stderr.on("data", (d: Buffer) => p.err.push(d.toString()));
  procs.push(p);
  return p;
}

function lines(chunks: readonly string[]): string[] {
  return chunks
    .join("")
    .split("\n")
    .filter((l) => l !== "");
}

/** Waits (bounded) for a line of `p`'s stdout or stderr that `match` accepts. */
async function waitForLine(p: Proc, match: (line: string) => boolean, timeoutMs: number): Promise<string> {
  const signal = AbortSignal.timeout(timeoutMs);
  for (;;) {
    const hit = [...lines(p.out), ...lines(p.err)].find(match);
    if (hit !== undefined) return hit;
    if (p.child.exitCode !== null) throw new Error(`exited ${p.child.exitCode}: ${p.err.join("")}`);
    await Promise.race([once(p.child.stdout, "data", { signal }), once(p.child.stderr, "data", { signal })]);
  }
}

function parsed(p: Proc): Record<string, unknown>[] {
  return [...lines(p.out), ...lines(p.err)].map((l) => JSON.parse(l) as Record<string, unknown>);
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "sigil-json-logs-"));
  app = http.createServer((_req, res) => res.end("ok"));
  await new Promise<void>((r) => app.listen(0, "127.0.0.1", r));
  appPort = (app.address() as AddressInfo).port;
  const policies = join(dir, "policies");
  await mkdir(policies);
  await writeFile(
    join(policies, "web.yaml"),
    `apiVersion: sigil.dev/v1
kind: AuthorizationPolicy
metadata: { name: web-egress }
spec:
  selector: { matchLabels: { app: web } }
  egress:
    - action: allow
      to: [ { cidrs: [ "127.0.0.1/32" ] } ]
      ports: [ ${appPort} ]
      http: { paths: [ "/ok" ] }
`,
  );
  cp = start([
    "cmd/sigil-controlplane/main.ts",
    ...["--data-dir", join(dir, "cp"), "--policy-dir", policies, "--mode", "enforce"],
    ...["--grpc-host", "127.0.0.1", "--grpc-port", "0", "--http-host", "127.0.0.1", "--http-port", "0"],
    ...["--http-tls", "off", "--log-level", "debug"],
  ]);
  const ready = readyEvent(await waitForLine(cp, (l) => readyEvent(l) !== null, 30_000)) as {
    grpc: string;
    http: string;
    bundle: string;
    tokenFile: string;
  };
  const admin = (await readFile(ready.tokenFile, "utf8")).trim();
  const res = await fetch(`http://${ready.http}/api/identity/tokens`, {
    method: "POST",
    headers: { authorization: `Bearer ${admin}`, "content-type": "application/json" },
    body: JSON.stringify({ name: "web", labels: { app: "web" }, ttlSeconds: 600 }),
  });
  expect(res.status).toBe(201);
  const { token } = (await res.json()) as { token: string };
  sidecar = start([
    "cmd/sigil/main.ts",
    "sidecar",
    ...["--control-plane", ready.grpc, "--control-plane-ca", ready.bundle, "--join-token", token],
    ...["--workload-name", "web", "--mode", "explicit", "--inbound-port", "0", "--admin-port", "0"],
    ...["--app-port", "9", "--outbound", `127.0.0.1:0=127.0.0.1:${appPort}`, "--log-level", "debug"],
    ...["--access-log", `${appPort}=all:1`],
  ]);
  sidecarReady = readyEvent(await waitForLine(sidecar, (l) => readyEvent(l) !== null, 60_000)) ?? {};
}, 90_000);

afterAll(async () => {
  for (const p of procs)
    if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill("SIGKILL");
  app?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe("JSON logs from real processes", () => {
  it("carry traffic, then every line of every stream is one JSON object with stable keys", async () => {
    const started = JSON.parse(
      await waitForLine(sidecar, (l) => l.includes('"msg":"sidecar started"'), 10_000),
    ) as { outboundTargets: { port: number }[]; inbound: { port: number } };
    const out = started.outboundTargets[0]?.port;
    expect((await fetch(`http://127.0.0.1:${out}/ok`)).status).toBe(200);
    expect((await fetch(`http://127.0.0.1:${out}/no`)).status).toBe(403);
    // A TLS client that looks like a mesh peer but presents no certificate.
    const client = tls.connect({
      host: "127.0.0.1",
      port: started.inbound.port,
      ALPNProtocols: ["sigil/1;http1;9"],
      rejectUnauthorized: false,
    });
    client.on("error", () => undefined);
    await new Promise<void>((resolve) => client.once("close", () => resolve()));
    await waitForLine(sidecar, (l) => l.includes('"msg":"mesh handshake refused"'), 10_000);
    await waitForLine(sidecar, (l) => l.includes('"msg":"denied"'), 10_000);

    for (const p of [cp, sidecar]) {
      p.child.kill("SIGTERM");
      await once(p.child, "exit");
    }
    for (const [who, p] of [
      ["control plane", cp],
      ["sidecar", sidecar],
    ] as const) {
      const all = [...lines(p.out), ...lines(p.err)];
      expect(all.length, who).toBeGreaterThan(3);
      for (const line of all) {
        let obj: Record<string, unknown>;
        try {
          obj = JSON.parse(line) as Record<string, unknown>;
        } catch {
          throw new Error(`${who} wrote a line that is not JSON: ${line}`);
        }
        expect(["fatal", "error", "warn", "info", "debug", "trace"], line).toContain(obj.level);
        expect(typeof obj.msg, line).toBe("string");
        expect(typeof obj.name, line).toBe("string");
        expect(Number.isNaN(Date.parse(String(obj.time))), line).toBe(false);
      }
    }
    expect(sidecarReady).toMatchObject({
      spiffeId: "spiffe://sigil.local/workload/web",
      name: "sigil-sidecar",
    });
  });

  it("names the logger and the policy set apart", () => {
    const applied = parsed(sidecar).find((l) => l.msg === "policy set applied");
    expect(applied).toMatchObject({ name: "sigil-sidecar" });
    expect(typeof applied?.policySet).toBe("string");
  });

  it("writes allowed and denied access-log lines on a port set to all", () => {
    const access = parsed(sidecar).filter((l) => l.access === true);
    expect(access.find((l) => l.msg === "allowed")).toMatchObject({ port: appPort, verdict: "allow" });
    expect(access.find((l) => l.msg === "denied")).toMatchObject({ port: appPort, verdict: "deny" });
  });

  it("gives the failed handshake a stable reason code beside OpenSSL's text", () => {
    const refused = parsed(sidecar).find((l) => l.msg === "mesh handshake refused");
    // OpenSSL's reason name (ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE), not its error line.
    expect(refused?.reason).toBe("tls-peer-did-not-return-a-certificate");
    expect(refused?.detail).toMatch(/peer did not return a certificate/);
  });
});
