import { once } from "node:events";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { Command } from "commander";
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { FlowRecord } from "../../core/flow.ts";
import { parsePolicyDocuments, stringifyPolicyDocuments } from "../../core/policy/index.ts";
import type { PolicyDocument } from "../../core/policy/index.ts";
import { register as registerFlows } from "../../cmd/sigil/commands/flows.ts";
import { register as registerGraph } from "../../cmd/sigil/commands/graph.ts";
import { register as registerMode } from "../../cmd/sigil/commands/mode.ts";
import { register as registerPolicy } from "../../cmd/sigil/commands/policy.ts";
import { flowServiceHandlers } from "../../controlplane/flows/service.ts";
import { FlowStore } from "../../controlplane/flows/store.ts";
import { FlowServiceDefinition } from "../../core/flow-wire.ts";
import { VisibilityClient } from "../../cmd/sigil/visibility-client.ts";
import { createControlPlaneMetrics } from "../../controlplane/metrics/metrics.ts";
import { ModeStore } from "../../controlplane/visibility/mode.ts";
import { registerVisibilityRoutes } from "../../controlplane/visibility/routes.ts";
import { FlowReporter } from "../../sidecar/flows/reporter.ts";
import { demo, demoTraffic, flow } from "../support/flows-fixtures.ts";
import { guardedRouter, type GuardedApi } from "../support/api-auth.ts";

const silent = pino({ level: "silent" });
let dir: string;
let store: FlowStore;
let grpcServer: grpc.Server;
let http: ReturnType<typeof createServer>;
let api: string;
let guarded: GuardedApi;
/** Fetches from the API as the admin (bearer token). */
const get = (path: string, init: RequestInit = {}) =>
  fetch(`${api}${path}`, {
    ...init,
    headers: { ...guarded.headers, ...(init.headers as Record<string, string>) },
  });
const adminClient = () => new VisibilityClient(api, { token: guarded.token, source: guarded.tokenFile });
let apiReporter: FlowReporter;
let webReporter: FlowReporter;
const inForce: PolicyDocument[] = [];
const sent: FlowRecord[] = demoTraffic();

async function cli(...args: string[]): Promise<{ out: string; err: string }> {
  return cliWith(guarded.tokenFile, ...args);
}

async function cliWith(tokenFile: string, ...args: string[]): Promise<{ out: string; err: string }> {
  let out = "";
  let err = "";
  const io = { out: (t: string) => void (out += t), err: (t: string) => void (err += t) };
  const program = new Command().exitOverride();
  for (const register of [registerFlows, registerGraph, registerPolicy, registerMode]) register(program, io);
  await program.parseAsync(["node", "sigil", ...args, "--api", api, "--token-file", tokenFile]);
  return { out, err };
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "sigil-api-"));
  store = await FlowStore.open({ dir: join(dir, "flows"), logger: silent });
  const metrics = createControlPlaneMetrics();
  grpcServer = new grpc.Server();
  grpcServer.addService(FlowServiceDefinition, flowServiceHandlers({ store, metrics, logger: silent }));
  const port = await new Promise<number>((resolve, reject) =>
    grpcServer.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (e, p) =>
      e ? reject(e) : resolve(p),
    ),
  );
  guarded = await guardedRouter(dir);
  const router = guarded.router;
  const modes = await ModeStore.open({ file: join(dir, "modes.json") });
  registerVisibilityRoutes(router, { store, modes, policies: () => inForce, metrics });
  http = createServer((req, res) => void router.handle(req, res));
  http.listen(0, "127.0.0.1");
  await once(http, "listening");
  api = `http://127.0.0.1:${(http.address() as AddressInfo).port}`;

  // Two sidecars, each reporting its own side of the demo traffic.
  const make = () =>
    new FlowReporter({
      target: `127.0.0.1:${port}`,
      credentials: () => grpc.credentials.createInsecure(),
      flushIntervalMs: 10,
      logger: silent,
    });
  apiReporter = make();
  webReporter = make();
  apiReporter.start();
  webReporter.start();
  for (const r of sent) (r.reporter.spiffeId === demo.web.spiffeId ? webReporter : apiReporter).report(r);
  await Promise.all([apiReporter.flush(), webReporter.flush()]);
});

afterAll(async () => {
  guarded?.auth.close();
  await apiReporter?.close(100);
  await webReporter?.close(100);
  grpcServer?.forceShutdown();
  http?.closeAllConnections();
  http?.close();
  await store?.close();
  await rm(dir, { recursive: true, force: true });
});

describe("visibility API and CLI over reported flows", () => {
  it("serves the reported flows with their identities, verdicts and policies", async () => {
    const res = await get(`/api/flows?limit=1000`);
    const { flows } = (await res.json()) as { flows: FlowRecord[] };
    expect(flows.map((f) => f.id).sort()).toEqual(sent.map((f) => f.id).sort());
    const denied = (await (await get(`/api/flows?denied=true&selector=app=rogue`)).json()) as {
      flows: FlowRecord[];
    };
    expect(denied.flows).toHaveLength(3);
    expect(denied.flows[0]).toMatchObject({
      source: { spiffeId: demo.rogue.spiffeId },
      destination: { spiffeId: demo.api.spiffeId },
      verdict: "deny",
      policy: null,
    });
    const bad = await get(`/api/flows?selector=nonsense`);
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { error: string }).error).toContain("not of the form key=value");
    expect((await get(`/api/flows?limit=0`)).status).toBe(400);
    expect((await get(`/api/flows?since=yesterday`)).status).toBe(400);
  });

  it("prints them with `sigil flows --denied` and `--selector`", async () => {
    const { out } = await cli("flows", "--denied");
    const lines = out.trim().split("\n");
    expect(lines).toHaveLength(3);
    expect(lines[0]).toContain(
      `DENY        ${demo.rogue.spiffeId} -> ${demo.api.spiffeId}:8080  GET /api/orders/1  policy=default  mTLS`,
    );
    const web = await cli("flows", "--selector", "app=web", "-n", "100");
    const webLines = web.out.trim().split("\n");
    expect(webLines).toHaveLength(12);
    expect(webLines.every((l) => l.includes(demo.web.spiffeId) && l.includes("ALLOW"))).toBe(true);
    expect(web.out).toContain("POST /api/orders  policy=demo-allow/ingress/0  mTLS  (ingress, sidecar)");
  });

  it("draws the graph with allowed and denied edges, in the API and `sigil graph`", async () => {
    const graph = await adminClient().graph();
    const byId = new Map(graph.edges.map((e) => [e.id, e]));
    expect(byId.get(`${demo.web.spiffeId} -> ${demo.api.spiffeId}:8080`)).toMatchObject({
      status: "allowed",
      allowed: 6,
      reports: { caller: 6, callee: 6 },
    });
    expect(byId.get(`${demo.rogue.spiffeId} -> ${demo.db.spiffeId}:5432`)).toMatchObject({
      status: "denied",
      denied: 1,
    });
    expect(graph.nodes.find((n) => n.spiffeId === demo.api.spiffeId)).toMatchObject({
      app: "api",
      namespace: "demo",
    });
    const { out } = await cli("graph");
    expect(out).toMatch(
      new RegExp(`${demo.rogue.spiffeId}\\s+->\\s+${demo.api.spiffeId}:8080\\s+DENIED\\s+allowed=0 denied=2`),
    );
    expect((await cli("graph", "--format", "dot")).out).toContain("color=red3");
  });

  it("follows new flows live over Server-Sent Events", async () => {
    const client = adminClient();
    const stop = new AbortController();
    const seen: FlowRecord[] = [];
    const fresh = flow({ from: demo.rogue, to: demo.web, port: 80, verdict: "deny", direction: "ingress" });
    const arrived = new Promise<void>((resolve) => {
      void client.follow(
        { denied: true, since: "1s" },
        (r) => {
          seen.push(r);
          if (r.id === fresh.id) resolve();
        },
        stop.signal,
      );
    });
    // The stream is open once the server has sent its backlog marker; a flow reported afterwards must arrive.
    await new Promise<void>((resolve) => {
      const check = () => (store.listenerCount("flows") > 0 ? resolve() : setImmediate(check));
      check();
    });
    webReporter.report(fresh);
    await arrived;
    stop.abort();
    expect(seen.map((r) => r.id)).toContain(fresh.id);
    expect(seen.every((r) => r.verdict === "deny" || r.wouldDeny)).toBe(true);
  });

  it("switches modes at run time and shows them", async () => {
    await cli("mode", "set", "observe", "--namespace", "demo");
    await cli("mode", "set", "enforce", "--workload", demo.db.spiffeId);
    const { out } = await cli("mode");
    expect(out).toContain("mesh-wide: enforce");
    expect(out).toContain("namespace demo: observe");
    expect(out).toMatch(new RegExp(`${demo.db.spiffeId}\\s+enforce\\s+workload`));
    expect(out).toMatch(new RegExp(`${demo.api.spiffeId}\\s+observe\\s+namespace`));
    const graph = await adminClient().graph();
    expect(graph.nodes.find((n) => n.spiffeId === demo.web.spiffeId)?.mode).toEqual({
      mode: "observe",
      from: "namespace",
    });
    await expect(cli("mode", "set", "permissive")).rejects.toThrow(/enforce or observe/);
    const res = await get(`/api/mode`, {
      method: "PUT",
      body: JSON.stringify({ scope: "workload", name: "x", mode: "observe" }),
    });
    expect(res.status).toBe(400);
    await cli("mode", "clear", "--namespace", "demo");
    await cli("mode", "clear", "--workload", demo.db.spiffeId);
  });

  it("suggests from the picked edges only, and never for a caller the callee refused", async () => {
    const edge = (from: { spiffeId: string }, to: { spiffeId: string }, port: number) =>
      `${from.spiffeId} -> ${to.spiffeId}:${port}`;
    const suggest = async (...edges: string[]) => {
      const q = new URLSearchParams({ since: "1h" });
      for (const e of edges) q.append("edge", e);
      const res = await get(`/api/policy/suggest?${q}`);
      expect(res.status).toBe(200);
      return (await res.json()) as { yaml: string; summary: { callerReports: number; used: number } };
    };
    const db = await suggest(edge(demo.api, demo.db, 5432));
    expect(db.yaml).toContain("name: suggested-db-demo-ingress");
    expect(db.yaml).not.toContain("suggested-api-demo-ingress");
    // The rogue's own sidecar let its requests out; the api refused them: nothing to suggest.
    const rogue = await suggest(edge(demo.rogue, demo.api, 8080));
    expect(rogue.yaml).toBe("");
    expect(rogue.summary).toMatchObject({ callerReports: 2, used: 0 });
  });

  it("suggests policies with `sigil policy suggest` and simulates a proposal with `sigil policy simulate`", async () => {
    const { out } = await cli("policy", "suggest", "--since", "1h");
    expect(out).toMatch(/^# Suggested by Sigil from \d+ of \d+ flows/);
    const parsed = parsePolicyDocuments(out, "suggested.yaml");
    expect(parsed.ok).toBe(true);
    const file = join(dir, "suggested.yaml");
    await writeFile(file, out);
    const same = await cli("policy", "simulate", "-f", file);
    expect(same.out).toMatch(/would now be denied/);
    expect(same.out).toContain(", 0 would now be denied, 0 would now be allowed");

    // Dropping POST from the proposal turns exactly the observed POSTs into denials.
    const noPost = join(dir, "no-post.yaml");
    const docs = parsed.ok ? parsed.documents.map((d) => d.document) : [];
    const withoutPost = docs.map((d) =>
      d.kind === "AuthorizationPolicy"
        ? {
            ...d,
            spec: { ...d.spec, ingress: d.spec.ingress?.filter((r) => !r.http?.methods?.includes("POST")) },
          }
        : d,
    );
    await writeFile(noPost, stringifyPolicyDocuments(withoutPost));
    const changed = await cli("policy", "simulate", "-f", noPost, "--json", "--fail-on", "never");
    const result = JSON.parse(changed.out) as {
      nowDenied: number;
      changes: { method?: string; path?: string; before: { verdict: string }; after: { verdict: string } }[];
    };
    expect(result.nowDenied).toBe(1);
    expect(result.changes).toEqual([
      expect.objectContaining({
        method: "POST",
        path: "/api/orders",
        before: expect.objectContaining({ verdict: "allow" }),
        after: expect.objectContaining({ verdict: "deny" }),
      }),
    ]);

    const broken = join(dir, "broken.yaml");
    await writeFile(
      broken,
      "apiVersion: sigil.dev/v1\nkind: AuthorizationPolicy\nmetadata: { name: x }\nspec: { selector: {}, ingress: [ { action: maybe } ] }\n",
    );
    await expect(cli("policy", "simulate", "-f", broken)).rejects.toThrow(/broken\.yaml:4.*action/s);
  });

  it("refuses the CLI and the API without the admin token, naming the file to fix", async () => {
    const wrong = join(dir, "wrong-token");
    await writeFile(wrong, `${"w".repeat(43)}\n`, { mode: 0o600 });
    await expect(cliWith(wrong, "mode", "set", "observe")).rejects.toThrow(
      `the control plane refused the token from ${wrong} (HTTP 401: the bearer token is not the control plane's admin token); pass --token-file <path> or set SIGIL_TOKEN_FILE`,
    );
    await expect(cliWith(wrong, "flows")).rejects.toThrow(/refused the token from/);
    expect((await adminClient().mode()).settings.mesh).toBe("enforce");
    const anonymous = await fetch(`${api}/api/flows`);
    expect(anonymous.status).toBe(401);
    expect(anonymous.headers.get("www-authenticate")).toMatch(/^Bearer/);
    expect((await fetch(`${api}/metrics`)).status).toBe(401);
  });

  it("serves control-plane metrics", async () => {
    const text = await (await get(`/metrics`)).text();
    expect(text).toContain("sigil_controlplane_flows_ingested_total");
    expect(text).toContain("sigil_controlplane_connected_sidecars");
    expect(text).toMatch(/sigil_controlplane_flow_streams 2/);
  });
});
