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
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { FlowRecord } from "../../core/flow.ts";
import {
  AgentLab,
  TRUST_DOMAIN,
  echoAccepted,
  queuedPackets,
  startServers,
} from "./fastpath-support/agent-lab.ts";
import type { AgentWorkload } from "./fastpath-support/agent-lab.ts";
import type { OutputLines } from "./fastpath-support/process-output.ts";

const SUBNET = 213;
const DB = 5432;
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

interface Workload extends AgentWorkload {
  server?: OutputLines;
}

describe.sequential("sigil sidecar --fast-path-ports: the destination's data path decides", () => {
  let lab: AgentLab;
  const w = {} as Record<Name, Workload>;
  let since: number;

  const flowsSince = (
    what: string,
    match: (f: FlowRecord) => boolean,
    count: number,
  ): Promise<FlowRecord[]> => lab.flowsSince(since, what, match, count);

  const accepted = (server: Workload): number => echoAccepted(server.server!);

  const nc = (to: Workload, input: string) =>
    w.web.host.ns.exec(["nc", "-v", "-N", "-w", "5", to.host.ipv4, String(DB)], {
      as: lab.app,
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

  beforeAll(async () => {
    lab = await AgentLab.create({
      names: ["web", "fastdb", "strictdb"],
      subnet: SUBNET,
      policy: POLICY,
      linkSuffix: "cq",
      dirPrefix: "sigil-agent-fp-dest-",
    });
    for (const name of ["fastdb", "strictdb", "web"] as const) w[name] = await lab.prepare(name);
    for (const name of ["fastdb", "strictdb"] as const) {
      w[name].server = await startServers(w[name].host, lab.app, DB);
    }
    await lab.startSidecars(Object.values(w), (x) => ({
      appPort: x.name === "web" ? undefined : DB,
      fastPathPorts: [DB],
    }));
    // The client learns from the peer directory which destinations take 5432 on the fast path.
    await lab.waitForFastPathDestination(w.web, w.fastdb);
  }, 300_000);

  afterAll(async () => {
    for (const x of Object.values(w)) x.server?.child.kill("SIGKILL");
    for (const x of Object.values(w)) {
      if (!x.sidecar) continue;
      x.sidecar.child.kill("SIGTERM");
      await x.sidecar.exit(30_000).catch(() => undefined);
    }
    await lab?.close();
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
    const fastpathFlows = lab.cp.flows
      .all({ since })
      .filter((f) => f.reporter.kind === "fastpath" && f.destination.address === w.strictdb.host.ipv4);
    expect(fastpathFlows).toEqual([]);
  }, 60_000);

  it("answers /ready 200 with the enforcers running", async () => {
    for (const x of Object.values(w)) expect((await readyStatus(x)).stdout).toBe("200");
  });
});
