import { once } from "node:events";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import pino from "pino";
import { chromium } from "playwright-core";
import type { BrowserContext, Page } from "playwright-core";
import type { Core } from "cytoscape";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { flowServiceHandlers } from "../../controlplane/flows/service.ts";
import { FlowStore } from "../../controlplane/flows/store.ts";
import { FlowServiceDefinition } from "../../core/flow-wire.ts";
import { ModeStore } from "../../controlplane/visibility/mode.ts";
import { PolicyStore } from "../../controlplane/policy-store/store.ts";
import { registerPolicyFileRoutes } from "../../controlplane/policy-store/routes.ts";
import { directoryWriter } from "../../controlplane/policy-store/writer.ts";
import { ReplicaFlows, type ReplicaPeer } from "../../controlplane/visibility/replica-flows.ts";
import { registerVisibilityRoutes } from "../../controlplane/visibility/routes.ts";
import { FlowReporter } from "../../sidecar/flows/reporter.ts";
import { demo, demoTraffic, flow } from "../support/flows-fixtures.ts";
import type { FlowSpec } from "../support/flows-fixtures.ts";
import { guardedRouter, type GuardedApi } from "../support/api-auth.ts";

/** Checked in (see test/artifacts/README.md): the screenshots of the UI as this suite last saw it. */
const ARTIFACTS = fileURLToPath(new URL("../artifacts/ui-browser/", import.meta.url));
const silent = pino({ level: "silent" });

const POLICY = `# Who may call the api (a comment the UI shows as written).
apiVersion: sigil.dev/v1
kind: AuthorizationPolicy
metadata: { name: demo-allow }
spec:
  selector: { matchLabels: { app: api } }
  ingress:
    - action: allow
      from: [ { matchLabels: { app: web } } ]
      ports: [ 8080 ]
      http: { methods: [ GET, POST ], paths: [ "/api/orders", "/api/orders/**", "/health" ] }
`;

let dir: string;
let store: FlowStore;
let grpcServer: grpc.Server;
let http: ReturnType<typeof createServer>;
let url: string;
let guarded: GuardedApi;
let reporter: FlowReporter;
let policyStore: PolicyStore;
let context: BrowserContext;
/** The other control-plane replicas this one asks for their flows: none until a test adds one. */
let peers: ReplicaPeer[] = [];
let page: Page;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "sigil-ui-"));
  store = await FlowStore.open({ dir: join(dir, "flows"), logger: silent });
  grpcServer = new grpc.Server();
  grpcServer.addService(FlowServiceDefinition, flowServiceHandlers({ store, logger: silent }));
  const port = await new Promise<number>((resolve, reject) =>
    grpcServer.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (e, p) =>
      e ? reject(e) : resolve(p),
    ),
  );
  const policyDir = join(dir, "policies");
  await mkdir(policyDir);
  await writeFile(join(policyDir, "demo.yaml"), POLICY);
  policyStore = await PolicyStore.open({ directory: policyDir, watch: false, logger: silent });
  const modes = await ModeStore.open();
  await modes.set({ kind: "workload", spiffeId: demo.db.spiffeId }, "observe");
  guarded = await guardedRouter(dir);
  const router = guarded.router;
  registerPolicyFileRoutes(router, {
    writer: directoryWriter(policyDir),
    current: () => policyStore.current(),
    texts: () => policyStore.texts(),
    changed: () => policyStore.reload(),
    records: (since) =>
      Promise.resolve({ value: store.all(since === undefined ? {} : { since }), unanswered: [] }),
  });
  registerVisibilityRoutes(router, {
    store,
    modes,
    replicas: new ReplicaFlows({ store, peers: () => peers, token: guarded.token }),
    policies: () => policyStore.current().documents.map((d) => d.document),
  });
  http = createServer((req, res) => void router.handle(req, res));
  http.listen(0, "127.0.0.1");
  await once(http, "listening");
  url = `http://127.0.0.1:${(http.address() as AddressInfo).port}/`;

  reporter = new FlowReporter({
    target: `127.0.0.1:${port}`,
    credentials: () => grpc.credentials.createInsecure(),
    flushIntervalMs: 10,
    logger: silent,
  });
  reporter.start();
  for (const r of demoTraffic()) reporter.report(r);
  // The db is in observe mode: a plaintext health probe from web would be denied, and is let through.
  reporter.report(
    flow({ from: demo.web, to: demo.db, port: 5432, wouldDeny: true, policy: null, encrypted: false }),
  );
  // The demo's gRPC call: refused by web's own egress policy, then allowed once a policy is added.
  const grpcCall: FlowSpec = {
    from: demo.web,
    to: demo.api,
    port: 50051,
    http: { method: "POST", path: "/demo.orders.v1.Orders/GetOrder" },
  };
  reporter.report(flow({ ...grpcCall, direction: "egress", verdict: "deny", policy: null }));
  reporter.report(flow({ ...grpcCall, direction: "egress", policy: "web-grpc-egress/egress/0" }));
  reporter.report(flow({ ...grpcCall, policy: "api-grpc-ingress/ingress/0" }));
  await reporter.flush();

  context = await chromium.launchPersistentContext(join(dir, "profile"), {
    executablePath: "/usr/bin/chromium",
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
    viewport: { width: 1440, height: 900 },
  });
  page = context.pages()[0] ?? (await context.newPage());
});

afterAll(async () => {
  await context?.close();
  guarded?.auth.close();
  await reporter?.close(100);
  grpcServer?.forceShutdown();
  http?.closeAllConnections();
  http?.close();
  await store?.close();
  await policyStore?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

interface EdgeView {
  id: string;
  color: string;
  status: string;
  classes: string[];
  x: number;
  y: number;
}

describe("web UI in a real browser", () => {
  it("shows the dependency map, the flows of a clicked edge and live updates", async () => {
    const pageErrors: string[] = [];
    page.on("pageerror", (err) => pageErrors.push(err.message));
    await page.goto(url);
    // Signed out, the page shows only the sign-in form; a wrong token is refused in the form.
    await page.locator("#sign-in-panel").waitFor({ state: "visible", timeout: 15_000 });
    expect(await page.locator("#flow-table tbody tr").count()).toBe(0);
    await page.fill("#sign-in input[name=token]", "not-the-admin-token-not-the-admin-token");
    await page.click("#sign-in button[type=submit]");
    await page.locator("#sign-in-error", { hasText: "not the control plane's admin token" }).waitFor({
      timeout: 10_000,
    });
    await page.fill("#sign-in input[name=token]", guarded.token);
    await page.click("#sign-in button[type=submit]");
    await page.waitForSelector("body[data-graph-ready='1']", { timeout: 15_000 });
    expect(await page.locator("#sign-in-panel").isHidden()).toBe(true);
    const cookies = await context.cookies(url);
    expect(cookies).toEqual([
      expect.objectContaining({ name: "sigil_session", httpOnly: true, sameSite: "Strict", path: "/" }),
    ]);
    expect(
      await page.evaluate(() => (globalThis as unknown as { document: { cookie: string } }).document.cookie),
    ).toBe("");

    const edges = await page.evaluate(() => {
      const cy = (globalThis as unknown as { sigil: { cy: Core } }).sigil.cy;
      return cy.edges().map((e) => {
        const mid = e.renderedMidpoint();
        return {
          id: e.id(),
          color: e.data("color"),
          status: e.data("edge").status,
          classes: e.classes(),
          x: mid.x,
          y: mid.y,
        };
      });
    });
    const statuses = (edges as EdgeView[]).map((e) => e.status);
    expect(statuses).toContain("allowed");
    expect(statuses).toContain("denied");
    expect(statuses).toContain("would-deny");
    const byId = new Map((edges as EdgeView[]).map((e) => [e.id, e]));
    const green = byId.get(`${demo.web.spiffeId} -> ${demo.api.spiffeId}:8080`)!;
    const red = byId.get(`${demo.rogue.spiffeId} -> ${demo.api.spiffeId}:8080`)!;
    expect(green.color).toBe("#2f9e57");
    expect(red.color).toBe("#d23f3f");
    expect(green.classes).toContain("encrypted");
    expect(byId.get(`${demo.web.spiffeId} -> ${demo.db.spiffeId}:5432`)!.classes).toEqual(
      expect.arrayContaining(["would-deny", "plaintext"]),
    );

    // A lock beside every encrypted edge's label, none on the plaintext one.
    const locks = await page
      .locator(".edge-lock")
      .evaluateAll((els) => els.map((e) => (e as unknown as { dataset: { edge: string } }).dataset.edge));
    const encryptedIds = (edges as EdgeView[])
      .filter((e) => e.classes.includes("encrypted"))
      .map((e) => e.id);
    expect(locks.sort()).toEqual(encryptedIds.sort());
    expect(locks).toContain(green.id);
    expect(locks).not.toContain(`${demo.web.spiffeId} -> ${demo.db.spiffeId}:5432`);

    // No edge label meets another label or a workload on the demo's graph (two ports between web
    // and api run side by side).
    const boxes = await page.evaluate(() => {
      const cy = (globalThis as unknown as { sigil: { cy: Core } }).sigil.cy;
      const opts = { includeNodes: false, includeEdges: false, includeLabels: true };
      return {
        labels: cy.edges().map((e) => ({ id: e.id(), ...e.renderedBoundingBox(opts) })),
        nodes: cy
          .nodes()
          .filter((n) => n.isChildless())
          .map((n) => ({ id: n.id(), ...n.renderedBoundingBox({ includeLabels: true }) })),
      };
    });
    type Box = { id: string; x1: number; x2: number; y1: number; y2: number };
    const meets = (a: Box, b: Box) => a.x1 < b.x2 && b.x1 < a.x2 && a.y1 < b.y2 && b.y1 < a.y2;
    const collisions: string[] = [];
    boxes.labels.forEach((a: Box, i: number) => {
      for (const b of [...boxes.labels.slice(i + 1), ...boxes.nodes] as Box[])
        if (meets(a, b)) collisions.push(`${a.id} meets ${b.id}`);
    });
    expect(boxes.labels).toHaveLength(6);
    expect(collisions).toEqual([]);

    // A real mouse click on the red edge's midpoint in the canvas.
    const box = (await page.locator("#graph").boundingBox())!;
    await page.mouse.click(box.x + red.x, box.y + red.y);
    await page.waitForSelector("#edge-flows tr.edge-flow", { timeout: 10_000 });
    const heading = await page.locator("#details h2").textContent();
    expect(heading).toBe("rogue → api :8080");
    const rows = await page.locator("#edge-flows tr.edge-flow").allTextContents();
    // Both sidecars reported each request: the rogue's let it out, the api's refused it.
    expect(rows).toHaveLength(4);
    expect(rows.join("\n")).toContain("GET /api/orders/1");
    expect(rows.join("\n")).toContain("DELETE /api/orders/7");
    expect(rows.filter((r) => r.includes("denied") && r.includes("default"))).toHaveLength(2);
    expect(rows.filter((r) => r.includes("api (callee)") && r.includes("denied"))).toHaveLength(2);
    expect(rows.filter((r) => r.includes("rogue (caller)") && r.includes("allowed"))).toHaveLength(2);
    expect(await page.locator("#details .counts .badge.deny").textContent()).toBe("2 denied");
    expect(await page.locator("#details .counts .badge.allow").textContent()).toBe("0 allowed");
    expect(await page.locator("#edge-policy").textContent()).toContain(
      "no policy allows this (default deny)",
    );

    // Live: a flow reported now shows up in the table without a reload.
    await page.waitForSelector("#live-state.on", { timeout: 10_000 });
    reporter.report(
      flow({ from: demo.web, to: demo.api, port: 8080, http: { method: "GET", path: "/api/orders/31337" } }),
    );
    await page.waitForSelector('#flow-table tbody tr.fresh:has-text("/api/orders/31337")', {
      timeout: 10_000,
    });

    await mkdir(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: join(ARTIFACTS, "ui-dependency-map.png") });

    // The allowed edge shows its deciding policy from the policies in force.
    await page.mouse.click(box.x + green.x, box.y + green.y);
    await page.locator("#details h2", { hasText: "web → api :8080" }).waitFor({ timeout: 10_000 });
    expect(await page.locator("#edge-policy").textContent()).toContain("demo-allow/ingress/0");
    await page.waitForSelector("#edge-flows tr.edge-flow");
    await page.screenshot({ path: join(ARTIFACTS, "ui-allowed-edge.png") });

    // Suggest: pick the allowed and the rogue's edge on the map, see the suggested policy, edit it,
    // simulate it against the recorded flows, and apply it.
    await page.click("#pick-edge");
    await page.mouse.click(box.x + red.x, box.y + red.y);
    await page.locator("#details h2", { hasText: "rogue → api :8080" }).waitFor({ timeout: 10_000 });
    await page.click("#pick-edge");
    await page.click("[role=tab][data-tab=suggest]");
    expect(await page.locator("#picked-edges li.picked-edge").allTextContents()).toEqual([
      "web → api :8080",
      "rogue → api :8080",
    ]);
    await page.click("#suggest-run");
    const yaml = page.locator("#tab-suggest textarea[name=yaml]");
    await page.waitForFunction(
      () =>
        ((
          globalThis as unknown as { document: { querySelector(s: string): { value: string } } }
        ).document.querySelector("#tab-suggest textarea[name=yaml]").value ?? "") !== "",
      undefined,
      { timeout: 10_000 },
    );
    const suggested = await yaml.inputValue();
    expect(suggested).toContain("name: suggested-api-demo-ingress");
    expect(suggested).toContain("app: web");
    // The api refused every request of the rogue's: its own egress allow suggests nothing.
    expect(suggested).not.toContain("rogue");
    expect(suggested).not.toMatch(/[&*]a\d/);
    expect(suggested).not.toContain("50051");
    const edited = suggested.replace("name: suggested-api-demo-ingress", "name: web-to-api");
    await yaml.fill(edited);
    await page.click("#simulate-run");
    const summary = await page.locator("#simulate-summary").textContent({ timeout: 10_000 });
    const simulated = (await (
      await fetch(`${url}api/policy/simulate`, {
        method: "POST",
        headers: { ...guarded.headers, "content-type": "application/json" },
        body: JSON.stringify({ yaml: edited, file: "suggested.yaml", since: "1h" }),
      })
    ).json()) as { evaluated: number; unchanged: number; nowDenied: number; nowAllowed: number };
    expect(simulated.evaluated).toBeGreaterThan(0);
    expect(summary).toBe(
      `${simulated.evaluated} recorded flows: ${simulated.unchanged} unchanged, ${simulated.nowDenied} would now be denied, ${simulated.nowAllowed} would now be allowed`,
    );
    await page.fill("#tab-suggest input[name=file]", "web-to-api.yaml");
    await page.click("#apply-run");
    await page.locator("#applied", { hasText: "Applied web-to-api.yaml" }).waitFor({ timeout: 10_000 });
    await page.locator("#applied").scrollIntoViewIfNeeded();
    await page.screenshot({ path: join(ARTIFACTS, "ui-suggest-policy.png") });
    const live = (await (await fetch(`${url}api/policies`, { headers: guarded.headers })).json()) as {
      policies: { metadata: { name: string }; spec: { ingress?: { from?: unknown[] }[] } }[];
    };
    const applied = live.policies.find((p) => p.metadata.name === "web-to-api");
    expect(applied?.spec.ingress?.flatMap((r) => r.from)).toEqual([
      { matchLabels: { app: "web", "k8s.ns": "demo" } },
      { matchLabels: { app: "web", "k8s.ns": "demo" } },
    ]);

    // The policies in force are shown as their files are written, the applied one included.
    await page.click("[role=tab][data-tab=policies]");
    const card = (name: string) => page.locator("#tab-policies .policy-card", { hasText: name });
    await card("web-to-api.yaml").waitFor({ timeout: 10_000 });
    expect(await card("demo.yaml").locator("pre.policy-yaml").textContent()).toBe(POLICY);
    expect(await card("web-to-api.yaml").locator("pre.policy-yaml").textContent()).toBe(edited);
    expect(await card("demo.yaml").locator("p.hint").textContent()).toContain(
      "AuthorizationPolicy demo-allow",
    );

    // Signing out closes the live stream and returns to the form; the old cookie opens nothing.
    const oldCookie = cookies[0]!;
    await page.click("#sign-out");
    await page.locator("#sign-in-panel").waitFor({ state: "visible", timeout: 10_000 });
    const replay = await fetch(`${url}api/graph`, {
      headers: { cookie: `${oldCookie.name}=${oldCookie.value}` },
    });
    expect(replay.status).toBe(401);
    expect(pageErrors).toEqual([]);
  });

  it("says which replica's flows are missing while one does not answer, and stops saying so when all do", async () => {
    const pageErrors: string[] = [];
    page.on("pageerror", (err) => pageErrors.push(err.message));
    // A replica announced but not listening: every answer that asks it goes on without it.
    const gone = createServer();
    gone.listen(0, "127.0.0.1");
    await once(gone, "listening");
    const goneApi = `http://127.0.0.1:${(gone.address() as AddressInfo).port}`;
    await new Promise((resolve) => gone.close(resolve));
    peers = [{ replica: "r7", api: goneApi }];

    await page.fill("#sign-in input[name=token]", guarded.token);
    await page.click("#sign-in button[type=submit]");
    const notice = page.locator("#partial");
    await notice.waitFor({ state: "visible", timeout: 15_000 });
    const text = await notice.textContent();
    expect(text).toContain(`replica r7 (${goneApi}: connect ECONNREFUSED`);
    expect(text).toContain("missing from what is shown");
    // The map and the table still show this replica's own flows.
    await page.waitForSelector("body[data-graph-ready='1']", { timeout: 15_000 });
    expect(await page.locator("#flow-table tbody tr").count()).toBeGreaterThan(0);

    peers = [];
    await page.reload();
    await page.waitForSelector("body[data-graph-ready='1']", { timeout: 15_000 });
    await page.locator("#live-state", { hasText: "live" }).waitFor({ timeout: 10_000 });
    expect(await notice.isHidden()).toBe(true);
    expect(pageErrors).toEqual([]);
  });
});
