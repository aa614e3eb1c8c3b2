/**
 * The L4 fast path end to end, in namespaces on one LAN (198.18.0.0/24, 2001:2::/64): a client
 * workload (app=web) and a server workload (app=db), each with the real enforcer process, and a
 * third host used as a peer without an enforcer or with a disallowed identity. Unmodified curl, nc
 * and iperf3 as clients.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { NetnsLab } from "../support/netns.ts";
import type { LabHost } from "../support/netns.ts";
import { EnforcerProcess } from "./fastpath-support/enforcer-process.ts";
import { OutputLines, REPO_ROOT, jsonLine } from "./fastpath-support/netns.ts";
import { TestPki } from "./fastpath-support/pki.ts";

const HTTP = 8080;
const ECHO = 7000;
const IPERF = 5201;
const PORTS = [HTTP, ECHO, IPERF];

/** The textual form inet_ntop (and so the enforcer) uses for an IPv6 address. */
function canonical(ipv6: string): string {
  return new URL(`http://[${ipv6}]/`).hostname.slice(1, -1);
}

const POLICY = (plainPeer: string): string => `
apiVersion: sigil.dev/v1
kind: AuthorizationPolicy
metadata: { name: db-ingress }
spec:
  selector: { matchLabels: { app: db } }
  ingress:
    - action: allow
      from: [ { matchLabels: { app: web } } ]
      ports: [ ${HTTP}, ${ECHO}, ${IPERF} ]
    - action: allow
      from: [ { cidrs: [ "${plainPeer}/32" ] } ]
      ports: [ ${ECHO} ]
`;

describe.sequential("fast path: identity in the handshake, then out of the data path", () => {
  let lab: NetnsLab;
  let pki: TestPki;
  let client: LabHost;
  let server: LabHost;
  let other: LabHost;
  let clientEnforcer: EnforcerProcess;
  let serverEnforcer: EnforcerProcess;
  let apps: OutputLines;
  let policyFile: string;

  beforeAll(async () => {
    lab = await NetnsLab.create(["client", "server", "other"]);
    client = lab.host("client");
    server = lab.host("server");
    other = lab.host("other");
    pki = await TestPki.create();
    policyFile = await pki.file("policy.yaml", POLICY(other.ipv4));
    const web = await pki.identity("web", { app: "web" });
    const db = await pki.identity("db", { app: "db" });
    apps = new OutputLines(
      server.ns.spawn([
        process.execPath,
        "--import",
        "tsx",
        `${REPO_ROOT}test/e2e/fastpath-support/servers.ts`,
        String(HTTP),
        String(ECHO),
      ]),
    );
    await apps.waitFor((l) => (jsonLine(l)?.event === "ready" ? true : undefined));
    serverEnforcer = await EnforcerProcess.start(server.ns, pki, "db", {
      identity: db,
      policyFile,
      inboundPorts: PORTS,
      queueFirst: 10,
    });
    clientEnforcer = await EnforcerProcess.start(client.ns, pki, "web", {
      identity: web,
      policyFile,
      outboundPorts: PORTS,
      queueFirst: 20,
    });
  }, 60_000);

  afterAll(async () => {
    await lab?.destroy();
    await pki?.destroy();
  });

  it("lets an allowed workload through with unmodified curl over IPv4 and IPv6", async () => {
    const v4 = await client.ns.execOk([
      "curl",
      "-sS",
      "--max-time",
      "5",
      `http://${server.ipv4}:${HTTP}/orders`,
    ]);
    expect(v4).toContain("hello from the db workload: GET /orders");
    const v6 = await client.ns.execOk([
      "curl",
      "-sS",
      "--max-time",
      "5",
      `http://[${server.ipv6}]:${HTTP}/v6`,
    ]);
    expect(v6).toContain("GET /v6");
    const flow = await serverEnforcer.waitForFlow(
      (f) => f.direction === "ingress" && f.source.address === canonical(client.ipv6),
    );
    expect(flow).toMatchObject({
      verdict: "allow",
      policy: "db-ingress/ingress/0",
      source: { spiffeId: "spiffe://sigil.local/workload/web", labels: { app: "web" } },
      reporter: { kind: "fastpath" },
    });
    const egress = await clientEnforcer.waitForFlow(
      (f) => f.direction === "egress" && f.destination.address === server.ipv4,
    );
    expect(egress).toMatchObject({
      verdict: "allow",
      destination: { spiffeId: "spiffe://sigil.local/workload/db" },
    });
  });

  it("carries an nc session both ways", async () => {
    const out = await client.ns.execOk([
      "sh",
      "-c",
      `printf 'ping over the fast path\\n' | nc -N -w 5 ${server.ipv4} ${ECHO}`,
    ]);
    expect(out).toBe("ping over the fast path\n");
  });
});
