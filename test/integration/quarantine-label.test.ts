/**
 * Quarantine by label, as an operator does it: `sigil workload label web vuln.critical=3`
 * with the shipped CLI against a running control plane, and two `sigil sidecar` agents (a client-only
 * web, an api serving a port). The labelled workload learns of its own change from its own
 * WorkloadIdentity resource, so a workload without ports (never in a peer directory) renews too; its
 * requests are refused within a bound, polled for and failed past it: by its own sidecar (a quarantine
 * egress policy selects it) or by the callee's (an ingress deny on its new label), also while its
 * sidecar holds a kept-alive connection to the callee opened with the old certificate.
 */
import { execFile } from "node:child_process";
import net from "node:net";
import { request as httpRequest } from "node:http";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import pino from "pino";
import type { FlowRecord } from "../../core/flow.ts";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startAgent } from "../../sidecar/agent/agent.ts";
import type { Agent } from "../../sidecar/agent/agent.ts";
import { parseAgentOptions } from "../../sidecar/agent/options.ts";
import type { AgentOptionsInput } from "../../sidecar/agent/options.ts";
import { loopbackAgentInput, startTestControlPlane } from "../support/control-plane.ts";
import type { TestControlPlane } from "../support/control-plane.ts";
import { startHttpApp, startTcpApp } from "../support/sidecar-apps.ts";
import type { App, HttpApp } from "../support/sidecar-apps.ts";

const SIGIL = fileURLToPath(new URL("../../bin/sigil.mjs", import.meta.url));
/** Label change to enforcement, on a loaded machine: pushes and one renewal take well under this. */
const BOUND_MS = 15_000;

const policies = (tunnelPort: number): string => `apiVersion: sigil.dev/v1
kind: AuthorizationPolicy
metadata: { name: api-ingress }
spec:
  selector: { matchLabels: { app: api } }
  ingress:
    - action: deny
      from: [ { matchExpressions: [ { key: vuln.high, operator: Gt, value: 5 } ] } ]
    - action: allow
      from: [ { matchLabels: { app: web } } ]
      http: { methods: [GET], paths: ["/orders/**"] }
    - action: allow
      from: [ { matchLabels: { app: web } } ]
      ports: [ ${tunnelPort} ]
---
apiVersion: sigil.dev/v1
kind: AuthorizationPolicy
metadata: { name: quarantine }
spec:
  selector: { matchExpressions: [ { key: vuln.critical, operator: Gt, value: 0 } ] }
  egress: []
`;

const quiet = pino({ level: "silent" });
let controlPlane: TestControlPlane;
let app: HttpApp;
let banner: App;
const agents: Agent[] = [];

async function agentFor(name: string, extra: Partial<AgentOptionsInput>): Promise<Agent> {
  const { token } = await controlPlane.cp.identity.tokens.create({
    name,
    labels: { app: name },
    ttlSeconds: 600,
  });
  const agent = await startAgent(parseAgentOptions(loopbackAgentInput(controlPlane, token, name, extra)), {
    logger: quiet,
    startTimeoutMs: 30_000,
  });
  agents.push(agent);
  return agent;
}

function sigil(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [SIGIL, ...args], { timeout: 60_000 }, (error, stdout, stderr) =>
      resolve({ code: error ? Number(error.code ?? 1) : 0, stdout, stderr }),
    );
  });
}

function status(port: number, path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: "127.0.0.1", port, path, method: "GET" }, (res) => {
      res.resume();
      res.on("end", () => resolve(res.statusCode ?? 0));
    });
    req.setTimeout(10_000, () => req.destroy(new Error(`GET ${path} timed out`)));
    req.on("error", reject);
    req.end();
  });
}

/** Polls `probe` until it returns true; fails with `what` once `boundMs` have passed. */
async function within(
  boundMs: number,
  what: string,
  probe: () => Promise<boolean> | boolean,
): Promise<number> {
  const start = Date.now();
  for (;;) {
    if (await probe()) return Date.now() - start;
    if (Date.now() - start > boundMs) throw new Error(`${what}: not within ${boundMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

beforeAll(async () => {
  app = await startHttpApp();
  banner = await startTcpApp("banner");
  controlPlane = await startTestControlPlane(
    "sigil-quarantine-",
    { "mesh.yaml": policies(banner.port) },
    quiet,
  );
}, 60_000);

afterAll(async () => {
  await Promise.all(agents.map((a) => a.close()));
  await app?.close();
  await banner?.close();
  await controlPlane?.close();
});

function workloadLabel(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const api = `http://127.0.0.1:${controlPlane.cp.httpPort}`;
  const tokenFile = join(controlPlane.dataDir, "http-token");
  return sigil("workload", "label", ...args, "--api", api, "--token-file", tokenFile);
}

async function label(...args: string[]): Promise<void> {
  const r = await workloadLabel(...args);
  expect(r.code, r.stderr).toBe(0);
  expect(r.stdout).toContain("re-issuance requested");
}

/** The first flow record at the control plane passing `test`, waited for within the bound. */
async function flowWhere(test: (r: FlowRecord) => boolean): Promise<FlowRecord> {
  let hit: FlowRecord | undefined;
  await within(BOUND_MS, "flow record at the control plane", () => {
    hit = controlPlane.cp.flows.query({}).find(test);
    return hit !== undefined;
  });
  return hit as FlowRecord;
}

const carries = (agent: Agent, key: string, value: string) => () =>
  agent.rotation.current().labels.some((l) => l.key === key && l.value === value);

describe("quarantine of a client-only workload by label", () => {
  let web: Agent;
  let outbound: number;

  beforeAll(async () => {
    await agentFor("api", { appPort: [app.port, banner.port], advertiseAddress: ["127.0.0.1"] });
    web = await agentFor("web", {
      outbound: [`127.0.0.1:0=127.0.0.1:${app.port}`, `127.0.0.1:0=127.0.0.1:${banner.port}`],
    });
    outbound = web.sidecar.outboundTargets[0]?.port ?? 0;
  }, 60_000);

  it("an open TCP tunnel is re-decided when the policy changes, and cut once no longer allowed", async () => {
    const socket = net.connect(web.sidecar.outboundTargets[1]?.port ?? 0, "127.0.0.1");
    socket.on("error", () => undefined);
    const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()));
    let received = "";
    socket.on("data", (c: Buffer) => (received += c.toString()));
    await within(BOUND_MS, "the banner through the tunnel", () => received.includes("220 ready"));
    socket.write("still here\n");
    await within(BOUND_MS, "the echo through the tunnel", () => received.includes("still here"));

    await controlPlane.writePolicy(
      "mesh.yaml",
      policies(banner.port).replace(`ports: [ ${banner.port} ]`, "ports: [ 1 ]"),
    );
    let cut = false;
    void closed.then(() => (cut = true));
    await within(BOUND_MS, "the open tunnel cut", () => cut);
  }, 60_000);

  it("the callee's ingress deny refuses it within the bound, though its sidecar keeps a connection alive", async () => {
    // Requests back to back keep web's pooled mTLS connection to api, opened with the old certificate, in use.
    expect(await status(outbound, "/orders/1")).toBe(200);
    await label(web.spiffeId, "--labels", "vuln.high=9");
    await within(BOUND_MS, "web's certificate carries vuln.high=9", carries(web, "vuln.high", "9"));
    await within(BOUND_MS, "api refuses web", async () => (await status(outbound, "/orders/2")) === 403);
    const denied = await flowWhere(
      (r) => r.direction === "ingress" && r.verdict === "deny" && r.source.labels["vuln.high"] === "9",
    );
    expect(denied.policy).toBe("api-ingress/ingress/0");
  }, 60_000);

  it("its own sidecar refuses its requests within the bound once a quarantine policy selects it", async () => {
    // kubectl's form, by name: vuln.high=9 stays, vuln.critical is added.
    await label("web", "vuln.critical=3");
    const refused = await workloadLabel("web", "vuln.critical=0");
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toMatch(/vuln\.critical.*already "3".*overwrite/);
    await within(BOUND_MS, "web's certificate carries vuln.critical=3", carries(web, "vuln.critical", "3"));
    await within(
      BOUND_MS,
      "web's own sidecar refuses",
      async () => (await status(outbound, "/orders/3")) === 403,
    );
    const denied = await flowWhere(
      (r) => r.direction === "egress" && r.verdict === "deny" && r.source.labels["vuln.critical"] === "3",
    );
    expect(denied.reason).toMatch(/egress/);
    expect(carries(web, "vuln.high", "9")()).toBe(true);
    // Lifting the quarantine: both findings removed, web is served again.
    await label("web", "vuln.critical-", "vuln.high-");
    await within(BOUND_MS, "web served again", async () => (await status(outbound, "/orders/4")) === 200);
  }, 60_000);
});
