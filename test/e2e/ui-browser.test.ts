import { once } from "node:events";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
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
import { parsePolicyDocuments } from "../../core/policy/index.ts";
import { flowServiceHandlers } from "../../controlplane/flows/service.ts";
import { FlowStore } from "../../controlplane/flows/store.ts";
import { FlowServiceDefinition } from "../../core/flow-wire.ts";
import { ModeStore } from "../../controlplane/visibility/mode.ts";
import { registerVisibilityRoutes } from "../../controlplane/visibility/routes.ts";
import { FlowReporter } from "../../sidecar/flows/reporter.ts";
import { demo, demoTraffic, flow } from "../support/flows-fixtures.ts";
import { guardedRouter, type GuardedApi } from "../support/api-auth.ts";

const ARTIFACTS = fileURLToPath(new URL("../artifacts/", import.meta.url));
const silent = pino({ level: "silent" });

const POLICY = `apiVersion: sigil.dev/v1
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
let context: BrowserContext;
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
  const parsed = parsePolicyDocuments(POLICY, "demo.yaml");
  if (!parsed.ok) throw new Error(JSON.stringify(parsed.errors));
  const policies = parsed.documents.map((d) => d.document);
  const modes = await ModeStore.open();
  await modes.set({ kind: "workload", spiffeId: demo.db.spiffeId }, "observe");
  guarded = await guardedRouter(dir);
  const router = guarded.router;
  registerVisibilityRoutes(router, { store, modes, policies: () => policies });
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

    // A real mouse click on the red edge's midpoint in the canvas.
    const box = (await page.locator("#graph").boundingBox())!;
    await page.mouse.click(box.x + red.x, box.y + red.y);
    await page.waitForSelector("#edge-flows tr.edge-flow", { timeout: 10_000 });
    const heading = await page.locator("#details h2").textContent();
    expect(heading).toBe("rogue → api :8080");
    const rows = await page.locator("#edge-flows tr.edge-flow").allTextContents();
    expect(rows).toHaveLength(2);
    expect(rows.join("\n")).toContain("GET /api/orders/1");
    expect(rows.join("\n")).toContain("DELETE /api/orders/7");
    expect(rows.every((r) => r.includes("denied") && r.includes("default"))).toBe(true);
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
});
