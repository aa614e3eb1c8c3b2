/**
 * The L4 fast path where users meet it: `sigil init --config capture.yaml`, then
 * `sigil sidecar --fast-path-ports 5432 --capture-config capture.yaml` in a client (app=web) and a
 * server (app=db) namespace made here, joined to a control plane on the host side of their bridge.
 * The sidecars re-apply capture with the handshake rules in one transaction; an unmodified nc talks
 * to a real TCP server. Shown: the allowed client gets through with only handshake packets ever
 * queued to userspace; a peer without an enforcer is reset; both decisions reach the control plane;
 * a policy change (allow → deny) applies to new connections while an established one keeps going;
 * stopped sidecars leave the handshake rules failing closed; and uninstalling restores
 * iptables-save exactly.
 */
import { randomBytes } from "node:crypto";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { FlowRecord } from "../../core/flow.ts";
import { readTables } from "../../sidecar/capture/apply.ts";
import { normalizeSave } from "../../sidecar/capture/transaction.ts";
import { waitFor } from "../support/netns.ts";
import type { LabHost } from "../support/netns.ts";
import {
  AgentLab,
  SIGIL,
  TRUST_DOMAIN,
  echoAccepted,
  queuedPackets,
  startServers,
} from "./fastpath-support/agent-lab.ts";
import type { AgentWorkload } from "./fastpath-support/agent-lab.ts";
import { OutputLines, REPO_ROOT, jsonLine } from "./fastpath-support/process-output.ts";
import { readyEvent } from "../../core/logger.ts";

const SUBNET = 211;
const DB = 5432;
/** An outside peer without an enforcer, on the lab's bridge. */
const OUTSIDER = `198.18.${SUBNET}.200`;

const policy = (web: "allow" | "deny"): string => `
apiVersion: sigil.dev/v1
kind: AuthorizationPolicy
metadata: { name: db-ingress }
spec:
  selector: { matchLabels: { app: db } }
  ingress:
    - action: ${web}
      from: [ { matchLabels: { app: web } } ]
      ports: [ ${DB} ]
  egress: []
---
apiVersion: sigil.dev/v1
kind: AuthorizationPolicy
metadata: { name: web-egress }
spec:
  selector: { matchLabels: { app: web } }
  egress:
    - action: allow
      to: [ { matchLabels: { app: db } } ]
      ports: [ ${DB} ]
---
# The fast path does not encrypt: 5432 must not be STRICT to take it.
apiVersion: sigil.dev/v1
kind: PeerAuthentication
metadata: { name: db-fastpath }
spec:
  selector: {}
  mode: STRICT
  portLevel: { "${DB}": PERMISSIVE }
`;

/** Someone else's rules, so the tables exist before capture and uninstall can be compared exactly. */
const FOREIGN: Record<"iptables" | "ip6tables", string[][]> = {
  iptables: [
    ["-t", "mangle", "-A", "PREROUTING", "-s", "198.18.211.99/32", "-j", "RETURN"],
    ["-t", "nat", "-A", "OUTPUT", "-d", "198.18.211.99/32", "-j", "RETURN"],
    ["-t", "filter", "-A", "INPUT", "-s", "198.18.211.99/32", "-j", "ACCEPT"],
  ],
  ip6tables: [
    ["-t", "mangle", "-A", "PREROUTING", "-s", "2001:2:0:d3::99/128", "-j", "RETURN"],
    ["-t", "nat", "-A", "OUTPUT", "-d", "2001:2:0:d3::99/128", "-j", "RETURN"],
    ["-t", "filter", "-A", "INPUT", "-s", "2001:2:0:d3::99/128", "-j", "ACCEPT"],
  ],
};

interface Workload extends AgentWorkload {
  baseline: string;
}

async function saved(host: LabHost): Promise<string> {
  const target = { backend: "auto" as const, netns: host.ns.name };
  return `${normalizeSave(await readTables(target, 4))}\n${normalizeSave(await readTables(target, 6))}`;
}

describe.sequential("sigil sidecar --fast-path-ports in network namespaces", () => {
  let lab: AgentLab;
  let web: Workload;
  let db: Workload;
  let server: OutputLines;
  let since: number;

  const flowsSince = (what: string, match: (f: FlowRecord) => boolean, count = 1): Promise<FlowRecord[]> =>
    lab.flowsSince(since, what, match, count);

  const accepted = (): number => echoAccepted(server);

  /** nc from web's namespace as the application user; resolves with what it printed and its exit. */
  const nc = (input: string, wait = 5) =>
    web.host.ns.exec(["nc", "-v", "-N", "-w", String(wait), db.host.ipv4, String(DB)], {
      as: lab.app,
      input,
      timeoutMs: 30_000,
    });

  /** Someone else's rules first, then the tables as they stand before capture. */
  async function prepare(name: "web" | "db"): Promise<Workload> {
    let baseline = "";
    const w = await lab.prepare(name, async (host) => {
      for (const [tool, rules] of Object.entries(FOREIGN))
        for (const rule of rules) await host.ns.execOk([tool, "-w", "5", ...rule]);
      baseline = await saved(host);
    });
    return { ...w, baseline };
  }

  // web only dials db: its enforcer signs the SYNs it sends and it serves nothing.
  const sidecarOptions = (w: AgentWorkload) => ({
    appPort: w.name === "db" ? DB : undefined,
    fastPathPorts: [DB],
  });

  beforeAll(async () => {
    lab = await AgentLab.create({
      names: ["web", "db"],
      subnet: SUBNET,
      policy: policy("allow"),
      linkSuffix: "cp",
      dirPrefix: "sigil-agent-fastpath-",
    });
    await lab.lab.hub.execOk(["ip", "addr", "add", `${OUTSIDER}/24`, "dev", "br0"]);
    server = await startServers(lab.lab.host("db"), lab.app, DB);

    db = await prepare("db");
    web = await prepare("web");
    await lab.startSidecars([db, web], sidecarOptions);
    // web's enforcer signs SYNs only to destinations the peer directory puts on the fast path.
    await lab.waitForFastPathDestination(web, db);
  }, 240_000);

  afterAll(async () => {
    await lab?.close();
  }, 60_000);

  it("puts the handshake rules into capture's transaction: fast-path hooks first, decided connections skip the proxy", async () => {
    for (const w of [db, web]) {
      const mangle = await w.host.ns.execOk(["iptables-save", "-t", "mangle"]);
      const hooks = mangle.split("\n").filter((l) => /^-A (PREROUTING|OUTPUT) /.test(l));
      expect(hooks[0]).toBe("-A PREROUTING -j SIGIL-FP-PRE");
      expect(mangle).toMatch(new RegExp(`^-A SIGIL-FP-PRE .*--dports ${DB} .*NFQUEUE`, "m"));
      const nat = await w.host.ns.execOk(["iptables-save", "-t", "nat"]);
      expect(nat).toMatch(/^-A SIGIL_INBOUND -m connmark ! --mark 0x0\/0xf00000 -j RETURN$/m);
      expect(nat).toMatch(/^-A SIGIL_OUTBOUND .*-m connmark ! --mark 0x0\/0xf00000 -j RETURN$/m);
    }
  });

  it("carries the allowed client's data with only its handshake ever reaching userspace", async () => {
    since = Date.now();
    const queuedBefore = { db: await queuedPackets(db.host), web: await queuedPackets(web.host) };
    const payload = `${randomBytes(384 * 1024).toString("base64")}\n`;
    const acceptedBefore = accepted();
    const out = await nc(payload);
    expect(out.stderr).toMatch(/succeeded/);
    expect(out.stdout.length).toBe(payload.length);
    expect(out.stdout === payload).toBe(true);
    expect(accepted()).toBe(acceptedBefore + 1);
    // One connection, ~512 KiB each way: on each side, its SYN and its SYN-ACK were all the kernel queued.
    expect((await queuedPackets(db.host)) - queuedBefore.db).toBe(2);
    expect((await queuedPackets(web.host)) - queuedBefore.web).toBe(2);

    const flows = await flowsSince(
      "web → db:5432 allowed on both sides",
      (f) => f.port === DB && f.verdict === "allow" && f.reporter.kind === "fastpath",
      2,
    );
    const byDirection = new Map(flows.map((f) => [f.direction, f]));
    expect(byDirection.get("ingress")).toMatchObject({
      reporter: { spiffeId: `spiffe://${TRUST_DOMAIN}/workload/db` },
      source: { spiffeId: `spiffe://${TRUST_DOMAIN}/workload/web`, address: web.host.ipv4 },
      policy: "db-ingress/ingress/0",
      encrypted: false,
    });
    expect(byDirection.get("egress")).toMatchObject({
      reporter: { spiffeId: `spiffe://${TRUST_DOMAIN}/workload/web` },
      destination: { spiffeId: `spiffe://${TRUST_DOMAIN}/workload/db`, address: db.host.ipv4 },
      policy: "web-egress/egress/0",
    });
  }, 60_000);

  it("resets a client without an enforcer and reports the denial", async () => {
    since = Date.now();
    const acceptedBefore = accepted();
    const out = await lab.lab.hub.exec(["nc", "-v", "-N", "-w", "5", db.host.ipv4, String(DB)], {
      input: "SELECT * FROM users\n",
      timeoutMs: 30_000,
    });
    expect(out.code).not.toBe(0);
    // Refused at once with a RST (ECONNREFUSED), not left to time out.
    expect(out.stderr).toMatch(/Connection refused/);
    expect(accepted()).toBe(acceptedBefore);
    const [denial] = await flowsSince(
      "outsider → db:5432 denied",
      (f) => f.port === DB && f.verdict === "deny" && f.source.address === OUTSIDER,
    );
    expect(denial).toMatchObject({
      direction: "ingress",
      reporter: { spiffeId: `spiffe://${TRUST_DOMAIN}/workload/db`, kind: "fastpath" },
      policy: null,
    });
    expect(denial!.source.spiffeId).toBeUndefined();
  }, 60_000);

  let held: OutputLines;

  it("applies a policy change (allow → deny) to new connections while an established one keeps going", async () => {
    held = new OutputLines(
      web.host.ns.spawn(
        [
          process.execPath,
          "--import",
          "tsx",
          join(REPO_ROOT, "test/e2e/fastpath-support/long-connection.ts"),
          db.host.ipv4,
          String(DB),
        ],
        { as: lab.app },
      ),
    );
    await held.waitFor((l) => (jsonLine(l)?.event === "connected" ? true : undefined), 20_000);
    const pongs = (): number => held.lines.filter((l) => jsonLine(l)?.event === "pong").length;
    held.child.stdin!.write("ping\n");
    await held.waitFor((l) => (jsonLine(l)?.event === "pong" ? true : undefined), 10_000);

    since = Date.now();
    await writeFile(lab.policyFile, policy("deny"));
    let last = await nc("SELECT 1\n", 3);
    await waitFor(
      "web's new connections refused after the change",
      async () => {
        last = await nc("SELECT 1\n", 3);
        return /Connection refused/.test(last.stderr);
      },
      { timeoutMs: 30_000, intervalMs: 100 },
    );
    expect(last.stdout).toBe("");
    const [denial] = await flowsSince(
      "web → db:5432 denied by the changed policy",
      (f) => f.port === DB && f.verdict === "deny" && f.policy === "db-ingress/ingress/0",
    );
    expect(denial).toMatchObject({
      direction: "ingress",
      source: { spiffeId: `spiffe://${TRUST_DOMAIN}/workload/web` },
      reporter: { kind: "fastpath" },
    });

    const before = pongs();
    held.child.stdin!.write("ping\n");
    await waitFor("a pong on the established connection", () => pongs() > before, { timeoutMs: 10_000 });

    await writeFile(lab.policyFile, policy("allow"));
    await waitFor("web allowed again", async () => (await nc("SELECT 2\n", 3)).stdout === "SELECT 2\n", {
      timeoutMs: 30_000,
      intervalMs: 100,
    });
  }, 120_000);

  it("fails closed once the sidecars stop: the rules stay, new handshakes go unanswered, established flows go on", async () => {
    const acceptedBefore = accepted();
    db.sidecar!.child.kill("SIGTERM");
    await db.sidecar!.exit(30_000);
    expect(await db.host.ns.execOk(["iptables-save", "-t", "mangle"])).toContain(
      "-A PREROUTING -j SIGIL-FP-PRE",
    );
    const unanswered = await nc("SELECT 3\n", 2);
    expect(unanswered.code).not.toBe(0);
    expect(unanswered.stdout).toBe("");

    web.sidecar!.child.kill("SIGTERM");
    await web.sidecar!.exit(30_000);
    const fromDeadClient = await nc("SELECT 4\n", 2);
    expect(fromDeadClient.code).not.toBe(0);
    expect(fromDeadClient.stdout).toBe("");
    expect(accepted()).toBe(acceptedBefore);

    const pongs = (): number => held.lines.filter((l) => jsonLine(l)?.event === "pong").length;
    const before = pongs();
    held.child.stdin!.write("ping\n");
    await waitFor("a pong with both enforcers gone", () => pongs() > before, { timeoutMs: 10_000 });
    held.child.kill("SIGKILL");
  }, 90_000);

  it("sigil init --uninstall restores iptables-save exactly, fast-path rules included", async () => {
    for (const w of [db, web]) {
      await w.host.ns.execOk([process.execPath, SIGIL, "init", "--uninstall", "--config", w.captureConfig], {
        timeoutMs: 60_000,
      });
      expect(await saved(w.host)).toBe(w.baseline);
    }
  }, 90_000);

  it("refuses to start on a capture config without the fast path's mark mask, changing nothing", async () => {
    // Without the mask, capture would redirect connections the fast path decided into the proxy.
    const captureConfig = join(web.dir, "capture-no-mask.yaml");
    await writeFile(captureConfig, `capture:\n  proxyUid: ${lab.proxy.uid}\n  proxyGid: ${lab.proxy.gid}\n`);
    await lab.writeJoinToken(web.name, web.dir);
    const refused = lab.startSidecar({ ...web, captureConfig }, sidecarOptions(web));
    await waitFor(
      "the sidecar's refusal",
      () =>
        /capture\.fastPathMarkMask must be 0xf00000 for the fast path \(is unset\)/.test(refused.stderrText),
      { timeoutMs: 120_000, intervalMs: 100 },
    );
    expect(refused.lines.some((l) => readyEvent(l) !== null)).toBe(false);
    refused.child.kill("SIGKILL");
    await refused.exit(10_000);
    expect(await saved(web.host)).toBe(web.baseline);
  }, 150_000);
});
