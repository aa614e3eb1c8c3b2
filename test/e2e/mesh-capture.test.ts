/**
 * The demo mesh's acceptance, in namespaces this suite builds with examples/demo's startMesh(): an
 * unmodified curl in web reaches the api server's real address through both sidecars while tcpdump on
 * api's veth sees only TLS; the rogue workload is denied (HTTP 403) or refused (TCP) and reported as
 * denied flows; `sigil workload label web --labels vuln.critical=3` quarantines web within a bound,
 * on new and kept-alive connections, until the label is removed; and killing a sidecar fails closed.
 */
import { randomBytes } from "node:crypto";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { FlowRecord } from "../../core/flow.ts";
import { Cleanup } from "../../examples/demo/cleanup.ts";
import { fetchFlows } from "../../examples/demo/flows.ts";
import { REPO_ROOT, startMesh, type Mesh } from "../../examples/demo/mesh.ts";
import { tlsBetween, WireCapture } from "../../examples/demo/wire.ts";
import { runSigil } from "../support/sigil-cli.ts";

const PREFIX = `sg${randomBytes(2).toString("hex")}-`;

async function waitForFlows(
  mesh: Mesh,
  since: number,
  what: string,
  match: (f: FlowRecord) => boolean,
  count = 1,
): Promise<FlowRecord[]> {
  const deadline = Date.now() + 20_000;
  while (true) {
    const found = (await fetchFlows(mesh.controlPlane!, since)).filter(match);
    if (found.length >= count) return found;
    if (Date.now() > deadline) throw new Error(`no flow reported for ${what} within 20 s`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

async function appLog(mesh: Mesh, name: "api" | "db"): Promise<string> {
  return readFile(mesh.apps.get(name)!.logFile, "utf8");
}

/** Label change to enforcement on a loaded machine: one directory push (and web's renewal). */
const QUARANTINE_BOUND_MS = 15_000;

const QUARANTINE_POLICY = `apiVersion: sigil.dev/v1
kind: AuthorizationPolicy
metadata: { name: quarantine }
spec:
  selector: {}
  ingress:
    - action: deny
      from: [ { matchExpressions: [ { key: vuln.critical, operator: Gt, value: "0" } ] } ]
`;

/** Runs web's curl to api until `done` holds for its status; fails once the bound has passed. */
async function webStatusWithin(mesh: Mesh, what: string, done: (status: string) => boolean): Promise<number> {
  const start = Date.now();
  const url = `http://${mesh.host("api").ipv4}:8080/api/orders`;
  for (;;) {
    const curl = await mesh.exec(
      "web",
      ["curl", "-sS", "--max-time", "5", "-o", "/dev/null", "-w", "%{http_code}", url],
      { timeoutMs: 10_000 },
    );
    if (done(curl.stdout)) return Date.now() - start;
    if (Date.now() - start > QUARANTINE_BOUND_MS)
      throw new Error(`${what}: not within ${QUARANTINE_BOUND_MS} ms (last: ${curl.stdout} ${curl.stderr})`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

describe.sequential("demo mesh in network namespaces", () => {
  const cleanup = new Cleanup();
  let mesh: Mesh;

  beforeAll(async () => {
    mesh = await startMesh(
      {
        prefix: PREFIX,
        subnet: 201,
        grpcPort: 0,
        httpPort: 0,
        policySource: join(REPO_ROOT, "examples/policies"),
        progress: () => undefined,
        readyTimeoutMs: 120_000,
      },
      cleanup,
    );
  }, 240_000);

  afterAll(async () => {
    await cleanup.run();
  }, 60_000);

  it("carries an unmodified curl from web to api's real address through both sidecars, TLS on the wire", async () => {
    const canary = `canary-${randomBytes(6).toString("hex")}`;
    const api = mesh.host("api");
    const web = mesh.host("web");
    const capture = await WireCapture.start(
      mesh.supervisor,
      mesh.topology.hub,
      join(mesh.workDir, "api.pcap"),
      {
        iface: api.hubPort,
      },
    );
    const since = Date.now();
    const curl = await mesh.exec(
      "web",
      ["curl", "-sS", "--max-time", "10", "-H", `x-canary: ${canary}`, `http://${api.ipv4}:8080/api/orders`],
      { timeoutMs: 20_000 },
    );
    expect(curl.stderr).toBe("");
    expect(curl.code).toBe(0);
    expect(curl.stdout).toContain("keyboard");
    expect(await appLog(mesh, "api")).toContain("api http GET /api/orders");

    const wire = await capture.finish([canary, "GET /api/orders", "keyboard"], [15006]);
    expect(wire.packets).toBeGreaterThan(0);
    const hello = tlsBetween(wire, web.ipv4, api.ipv4, 8080);
    expect(hello?.alpn).toEqual(["sigil/1;http1;8080"]);
    expect(wire.plaintextSeen.get(canary)).toBe(false);
    expect(wire.plaintextSeen.get("GET /api/orders")).toBe(false);
    expect(wire.plaintextSeen.get("keyboard")).toBe(false);

    // Both sidecars decided it and said so: web's on the way out, api's on the way in.
    const flows = await waitForFlows(
      mesh,
      since,
      "web → api GET /api/orders",
      (f) => f.http?.path === "/api/orders" && f.source.spiffeId === mesh.spiffeId("web"),
      2,
    );
    const byDirection = new Map(flows.map((f) => [f.direction, f]));
    expect(byDirection.get("egress")?.reporter.spiffeId).toBe(mesh.spiffeId("web"));
    expect(byDirection.get("ingress")?.reporter.spiffeId).toBe(mesh.spiffeId("api"));
    for (const f of flows) {
      expect(f.verdict).toBe("allow");
      expect(f.encrypted).toBe(true);
      expect(f.destination.spiffeId).toBe(mesh.spiffeId("api"));
    }
    expect(byDirection.get("ingress")?.policy).toBe("api-ingress/ingress/0");
  }, 60_000);

  it("denies the rogue workload's HTTP with 403 and refuses its TCP, reporting both as denied", async () => {
    const since = Date.now();
    const api = mesh.host("api");
    const before = await appLog(mesh, "api");
    const curl = await mesh.exec(
      "rogue",
      [
        "curl",
        "-sS",
        "--max-time",
        "10",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        `http://${api.ipv4}:8080/api/orders`,
      ],
      { timeoutMs: 20_000 },
    );
    expect(curl.stdout).toBe("403");
    expect(await appLog(mesh, "api")).toBe(before);

    const dbBefore = await appLog(mesh, "db");
    const nc = await mesh.exec("rogue", ["nc", "-N", "-w", "3", mesh.host("db").ipv4, "5432"], {
      input: "SELECT * FROM users\n",
      timeoutMs: 15_000,
    });
    expect(nc.stdout).toBe("");
    expect(await appLog(mesh, "db")).toBe(dbBefore);

    const rogue = mesh.spiffeId("rogue");
    const [httpDenial] = await waitForFlows(
      mesh,
      since,
      "rogue → api",
      (f) => f.source.spiffeId === rogue && f.port === 8080 && f.verdict === "deny",
    );
    expect(httpDenial!.direction).toBe("ingress");
    expect(httpDenial!.reporter.spiffeId).toBe(mesh.spiffeId("api"));
    expect(httpDenial!.http?.status).toBe(403);
    const [tcpDenial] = await waitForFlows(
      mesh,
      since,
      "rogue → db",
      (f) => f.source.spiffeId === rogue && f.port === 5432 && f.verdict === "deny",
    );
    expect(tcpDenial!.reporter.spiffeId).toBe(mesh.spiffeId("db"));
    expect(tcpDenial!.protocol).toBe("tcp");
  }, 60_000);

  it("quarantines web with `sigil workload label`: api refuses it on new and kept-alive connections within the bound, until the label is removed", async () => {
    const cp = mesh.controlPlane!;
    const api = ["--api", cp.http, "--token-file", cp.tokenFile];
    const applied = await runSigil(["policy", "apply", "-f", "-", "--name", "quarantine.yaml", ...api], {
      stdin: QUARANTINE_POLICY,
    });
    expect(applied.code, applied.stderr).toBe(0);
    const web = mesh.spiffeId("web");
    try {
      await webStatusWithin(mesh, "web → api allowed before the label", (s) => s === "200");
      // One connection kept alive across the change: a request every 250 ms for 12 s.
      const kept = mesh.exec(
        "web",
        [
          "curl",
          "-sS",
          "--rate",
          "4/s",
          "-o",
          "/dev/null",
          "-w",
          "%{http_code} %{num_connects}\\n",
          `http://${mesh.host("api").ipv4}:8080/api/orders#[1-48]`,
        ],
        { timeoutMs: 60_000 },
      );
      await webStatusWithin(mesh, "web → api allowed while the kept connection runs", (s) => s === "200");
      const labelled = await runSigil(["workload", "label", web, "--labels", "vuln.critical=3", ...api]);
      expect(labelled.code, labelled.stderr).toBe(0);
      await webStatusWithin(mesh, "api refuses web on a new connection", (s) => s === "403");

      const lines = (await kept).stdout.trim().split("\n");
      expect(lines).toHaveLength(48);
      const statuses = lines.map((l) => l.split(" ")[0]);
      // Allowed until the label reached api, refused from then on: first on the client connection
      // opened before the label (no new connect), and never allowed again.
      const firstRefused = statuses.indexOf("403");
      expect(firstRefused, lines.join(", ")).toBeGreaterThan(0);
      expect(
        statuses.slice(0, firstRefused).every((st) => st === "200"),
        lines.join(", "),
      ).toBe(true);
      expect(lines[firstRefused]?.endsWith(" 0"), lines.join(", ")).toBe(true);
      expect(statuses.slice(firstRefused).includes("200"), lines.join(", ")).toBe(false);
    } finally {
      const cleared = await runSigil(["workload", "label", web, "--labels", "", ...api]);
      expect(cleared.code, cleared.stderr).toBe(0);
    }
    await webStatusWithin(mesh, "web → api allowed again after the label is removed", (s) => s === "200");
    const deleted = await runSigil(["policy", "delete", "quarantine.yaml", ...api]);
    expect(deleted.code, deleted.stderr).toBe(0);
  }, 120_000);

  it("fails closed when a sidecar dies: captured traffic is refused, never sent in the clear", async () => {
    const api = mesh.host("api");
    const web = mesh.host("web");
    const canary = `/api/canary-${randomBytes(6).toString("hex")}`;
    const capture = await WireCapture.start(
      mesh.supervisor,
      mesh.topology.hub,
      join(mesh.workDir, "dead.pcap"),
      {
        iface: api.hubPort,
      },
    );
    const before = await appLog(mesh, "api");

    await mesh.sidecars.get("api")!.stop("SIGKILL");
    // Through web's sidecar: it cannot reach api's sidecar and must not fall back to plaintext.
    const viaMesh = await mesh.exec(
      "web",
      [
        "curl",
        "-sS",
        "--max-time",
        "10",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        `http://${api.ipv4}:8080${canary}`,
      ],
      { timeoutMs: 20_000 },
    );
    expect(viaMesh.stdout).not.toMatch(/^2/);
    // Around web's sidecar (as its exempt uid): api's capture still redirects to the dead listener.
    const bypass = await mesh.exec(
      "web",
      ["curl", "-sS", "--max-time", "10", `http://${api.ipv4}:8080${canary}`],
      { as: mesh.proxyUser, timeoutMs: 20_000 },
    );
    expect(bypass.code).toBe(7);

    await mesh.sidecars.get("web")!.stop("SIGKILL");
    // With web's sidecar gone too, web's own connections hit a closed capture port on web itself.
    const deadLocal = await mesh.exec(
      "web",
      ["curl", "-sS", "--max-time", "10", `http://${api.ipv4}:8080${canary}`],
      {
        timeoutMs: 20_000,
      },
    );
    expect(deadLocal.code).toBe(7);

    expect(await appLog(mesh, "api")).toBe(before);
    const wire = await capture.finish([canary], [15006]);
    expect(wire.plaintextSeen.get(canary)).toBe(false);
    expect(wire.hellos.filter((h) => h.src === web.ipv4 && h.dst === api.ipv4)).toEqual([]);
  }, 60_000);
});
