/**
 * The client's fast path follows the destination's choice. A client (app=web) runs
 * `sigil sidecar --fast-path-ports 5432` and dials 5432 on two servers in namespaces made here:
 * `fastdb`, whose 5432 is PERMISSIVE and so on the fast path (peer directory L4_FAST_PATH), and
 * `strictdb`, whose 5432 is STRICT (L7_PROXY). Shown: to fastdb the handshake carries the tokens
 * (exactly SYN and SYN-ACK queued on each side, fast-path flow records); to strictdb the client's
 * SYN is never queued and the connection goes through both proxies with mTLS (proxy flow records,
 * encrypted, no queue counter moving on either side); and each sidecar's /ready answers 200 with
 * its enforcers running.
 */
import { randomBytes } from "node:crypto";
import { chmod, copyFile, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startControlPlane } from "../../controlplane/control-plane.ts";
import type { ControlPlane } from "../../controlplane/control-plane.ts";
import type { FlowRecord } from "../../core/flow.ts";
import { appUser, chownTo, ensureProxyUser } from "../../examples/demo/users.ts";
import { MARK_MASK, hex } from "../../sidecar/fastpath/marks.ts";
import { NetnsLab, run, runOk, waitFor } from "../support/netns.ts";
import type { LabHost, RunAs } from "../support/netns.ts";
import { OutputLines, REPO_ROOT, jsonLine } from "./fastpath-support/netns.ts";

const SUBNET = 213;
const DB = 5432;
const TRUST_DOMAIN = "sigil.local";
const SIGIL = join(REPO_ROOT, "bin/sigil.mjs");
const HOST_ADDRESS = `198.18.${SUBNET}.254`;
const ADMIN = 15000;

const POLICY = `
apiVersion: sigil.dev/v1
kind: AuthorizationPolicy
metadata: { name: db-ingress }
spec:
  selector: { matchExpressions: [ { key: app, operator: In, values: [ fastdb, strictdb ] } ] }
  ingress:
    - action: allow
      from: [ { matchLabels: { app: web } } ]
      ports: [ ${DB} ]
---
apiVersion: sigil.dev/v1
kind: AuthorizationPolicy
metadata: { name: web-egress }
spec:
  selector: { matchLabels: { app: web } }
  egress:
    - action: allow
      to: [ { matchExpressions: [ { key: app, operator: In, values: [ fastdb, strictdb ] } ] } ]
      ports: [ ${DB} ]
---
# fastdb lets 5432 take the unencrypted fast path; strictdb (no PeerAuthentication) stays STRICT.
apiVersion: sigil.dev/v1
kind: PeerAuthentication
metadata: { name: fastdb-fastpath }
spec:
  selector: { matchLabels: { app: fastdb } }
  mode: STRICT
  portLevel: { "${DB}": PERMISSIVE }
`;

type Name = "web" | "fastdb" | "strictdb";

interface Workload {
  name: Name;
  host: LabHost;
  dir: string;
  captureConfig: string;
  sidecar?: OutputLines;
  server?: OutputLines;
}

/** Packets the kernel handed to NFQUEUE in this namespace (the NFQUEUE rules' counters, both families). */
async function queuedPackets(host: LabHost): Promise<number> {
  let total = 0;
  for (const tool of ["iptables", "ip6tables"]) {
    const text = await host.ns.execOk([tool, "-w", "5", "-t", "mangle", "-L", "-v", "-x", "-n"]);
    for (const line of text.split("\n")) {
      if (line.includes("NFQUEUE")) total += Number(line.trim().split(/\s+/)[0]);
    }
  }
  return total;
}

describe.sequential("sigil sidecar --fast-path-ports: the destination's data path decides", () => {
  const hostLink = `sg${randomBytes(3).toString("hex")}cq`;
  let lab: NetnsLab;
  let cp: ControlPlane;
  let dir: string;
  let proxy: RunAs;
  let app: RunAs;
  const w = {} as Record<Name, Workload>;
  let since: number;

  const flowsSince = async (
    what: string,
    match: (f: FlowRecord) => boolean,
    count: number,
  ): Promise<FlowRecord[]> => {
    let found: FlowRecord[] = [];
    await waitFor(
      what,
      () => {
        found = cp.flows.all({ since }).filter(match);
        return found.length >= count;
      },
      { timeoutMs: 20_000, intervalMs: 200 },
    );
    return found;
  };

  const accepted = (server: Workload): number =>
    server.server!.lines.filter((l) => jsonLine(l)?.event === "accepted" && jsonLine(l)?.server === "echo")
      .length;

  const nc = (to: Workload, input: string) =>
    w.web.host.ns.exec(["nc", "-v", "-N", "-w", "5", to.host.ipv4, String(DB)], {
      as: app,
      input,
      timeoutMs: 30_000,
    });

  const readyStatus = (x: Workload) =>
    x.host.ns.exec(
      ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", `http://127.0.0.1:${ADMIN}/ready`],
      {
        timeoutMs: 10_000,
      },
    );

  async function prepare(name: Name, host: LabHost): Promise<Workload> {
    const wdir = join(dir, name);
    await mkdir(wdir, { mode: 0o700 });
    const captureConfig = join(wdir, "capture.yaml");
    await writeFile(
      captureConfig,
      [
        "capture:",
        `  proxyUid: ${proxy.uid}`,
        `  proxyGid: ${proxy.gid}`,
        `  fastPathMarkMask: ${hex(MARK_MASK)}`,
        "",
      ].join("\n"),
    );
    await host.ns.execOk([process.execPath, SIGIL, "init", "--config", captureConfig], { timeoutMs: 60_000 });
    const { token } = await cp.identity.tokens.create({ name, labels: { app: name }, ttlSeconds: 600 });
    await writeFile(join(wdir, "join-token"), `${token}\n`, { mode: 0o600 });
    await chownTo(wdir, proxy);
    return { name, host, dir: wdir, captureConfig };
  }

  function startSidecar(x: Workload): OutputLines {
    const child = x.host.ns.spawn(
      [
        "setpriv",
        `--reuid=${proxy.uid}`,
        `--regid=${proxy.gid}`,
        "--clear-groups",
        "--inh-caps=+net_admin",
        "--ambient-caps=+net_admin",
        "--",
        process.execPath,
        SIGIL,
        "sidecar",
        "--control-plane",
        `${HOST_ADDRESS}:${cp.grpc.port}`,
        "--control-plane-ca",
        join(dir, "controlplane-ca.pem"),
        "--join-token-file",
        join(x.dir, "join-token"),
        "--workload-name",
        x.name,
        "--mode",
        "captured",
        "--advertise-address",
        x.host.ipv4,
        ...(x.name === "web" ? [] : ["--app-port", String(DB)]),
        "--fast-path-ports",
        String(DB),
        "--capture-config",
        x.captureConfig,
        "--log-level",
        "info",
      ],
      { env: { PATH: process.env.PATH, HOME: x.dir } },
    );
    return new OutputLines(child);
  }

  beforeAll(async () => {
    [proxy, app] = await Promise.all([ensureProxyUser(), appUser()]);
    dir = await mkdtemp(join(tmpdir(), "sigil-agent-fp-dest-"));
    await chmod(dir, 0o755);
    lab = await NetnsLab.create(["web", "fastdb", "strictdb"], { subnet: SUBNET });
    await runOk(["ip", "link", "add", hostLink, "type", "veth", "peer", "name", "cp", "netns", lab.hub.name]);
    await lab.hub.execOk(["ip", "link", "set", "cp", "master", "br0", "up"]);
    await runOk(["ip", "addr", "add", `${HOST_ADDRESS}/24`, "dev", hostLink]);
    await runOk(["ip", "link", "set", hostLink, "up"]);

    await mkdir(join(dir, "policies"));
    await writeFile(join(dir, "policies", "db.yaml"), POLICY);
    cp = await startControlPlane({
      dataDir: join(dir, "cp"),
      trustDomain: TRUST_DOMAIN,
      policyDir: join(dir, "policies"),
      mode: "enforce",
      grpc: { host: HOST_ADDRESS, port: 0 },
      xdsPlaintext: undefined,
      http: { host: "127.0.0.1", port: 0 },
      serverNames: [],
      log: pino({ level: "silent" }),
    });
    await copyFile(cp.bundlePath, join(dir, "controlplane-ca.pem"));
    await chmod(join(dir, "controlplane-ca.pem"), 0o644);

    for (const name of ["fastdb", "strictdb", "web"] as const) w[name] = await prepare(name, lab.host(name));
    for (const name of ["fastdb", "strictdb"] as const) {
      const server = new OutputLines(
        lab
          .host(name)
          .ns.spawn(
            [
              process.execPath,
              "--import",
              "tsx",
              join(REPO_ROOT, "test/e2e/fastpath-support/servers.ts"),
              "8080",
              String(DB),
            ],
            { as: app },
          ),
      );
      await server.waitFor((l) => (jsonLine(l)?.event === "ready" ? true : undefined), 30_000);
      w[name].server = server;
    }
    for (const x of Object.values(w)) x.sidecar = startSidecar(x);
    for (const x of Object.values(w)) {
      await x.sidecar!.waitFor(
        (l) => (l.startsWith("sigil sidecar ready spiffe=") ? true : undefined),
        120_000,
      );
    }
    // The client learns from the peer directory which destinations take 5432 on the fast path.
    const fastdbWord = `0x${w.fastdb.host.ipv4
      .split(".")
      .reduce((acc, p) => acc * 256 + Number(p), 0)
      .toString(16)}`;
    await waitFor(
      "web's rules list fastdb as a fast-path destination",
      async () => (await w.web.host.ns.execOk(["iptables-save", "-t", "mangle"])).includes(`=${fastdbWord}"`),
      { timeoutMs: 30_000, intervalMs: 200 },
    );
  }, 300_000);

  afterAll(async () => {
    for (const x of Object.values(w)) x.server?.child.kill("SIGKILL");
    for (const x of Object.values(w)) {
      if (!x.sidecar) continue;
      x.sidecar.child.kill("SIGTERM");
      await x.sidecar.exit(30_000).catch(() => undefined);
    }
    await lab?.destroy();
    await run(["ip", "link", "del", hostLink]);
    await cp?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  }, 90_000);

  it("lists only L4_FAST_PATH destinations in the client's outbound handshake rules", async () => {
    const mangle = await w.web.host.ns.execOk(["iptables-save", "-t", "mangle"]);
    const outbound = mangle.split("\n").filter((l) => /^-A SIGIL-FP-OUT .*-j SIGIL-FP-OUTQ$/.test(l));
    // fastdb's IPv4 address only: strictdb's 5432 is L7_PROXY, and nothing else is a mesh destination.
    expect(outbound).toHaveLength(1);
    expect(outbound[0]).toContain(`--dports ${DB}`);
  });

  it("reaches the PERMISSIVE server through the fast path: SYN and SYN-ACK queued on each side", async () => {
    since = Date.now();
    const before = { web: await queuedPackets(w.web.host), fastdb: await queuedPackets(w.fastdb.host) };
    const acceptedBefore = accepted(w.fastdb);
    const out = await nc(w.fastdb, "SELECT 1\n");
    expect(out.stderr).toMatch(/succeeded/);
    expect(out.stdout).toBe("SELECT 1\n");
    expect(accepted(w.fastdb)).toBe(acceptedBefore + 1);
    expect((await queuedPackets(w.web.host)) - before.web).toBe(2);
    expect((await queuedPackets(w.fastdb.host)) - before.fastdb).toBe(2);
    const flows = await flowsSince(
      "web → fastdb:5432 allowed by both enforcers",
      (f) => f.port === DB && f.verdict === "allow" && f.reporter.kind === "fastpath",
      2,
    );
    expect(new Set(flows.map((f) => f.direction))).toEqual(new Set(["ingress", "egress"]));
    for (const f of flows) expect(f.encrypted).toBe(false);
  }, 60_000);

  it("reaches the STRICT server through both proxies with mTLS, no handshake packet queued", async () => {
    since = Date.now();
    const before = { web: await queuedPackets(w.web.host), strictdb: await queuedPackets(w.strictdb.host) };
    const acceptedBefore = accepted(w.strictdb);
    const payload = `${randomBytes(48 * 1024).toString("base64")}\n`;
    const out = await nc(w.strictdb, payload);
    expect(out.stderr).toMatch(/succeeded/);
    expect(out.stdout === payload).toBe(true);
    expect(accepted(w.strictdb)).toBe(acceptedBefore + 1);
    expect((await queuedPackets(w.web.host)) - before.web).toBe(0);
    expect((await queuedPackets(w.strictdb.host)) - before.strictdb).toBe(0);
    const flows = await flowsSince(
      "web → strictdb:5432 allowed by both proxies",
      (f) => f.port === DB && f.verdict === "allow" && f.reporter.kind === "sidecar",
      2,
    );
    const reporters = new Set(flows.map((f) => f.reporter.spiffeId));
    expect(reporters).toEqual(
      new Set([`spiffe://${TRUST_DOMAIN}/workload/web`, `spiffe://${TRUST_DOMAIN}/workload/strictdb`]),
    );
    for (const f of flows) expect(f.encrypted).toBe(true);
    const fastpathFlows = cp.flows
      .all({ since })
      .filter((f) => f.reporter.kind === "fastpath" && f.destination.address === w.strictdb.host.ipv4);
    expect(fastpathFlows).toEqual([]);
  }, 60_000);

  it("answers /ready 200 with the enforcers running", async () => {
    for (const x of Object.values(w)) expect((await readyStatus(x)).stdout).toBe("200");
  });
});
