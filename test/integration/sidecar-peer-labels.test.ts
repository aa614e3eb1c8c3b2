/**
 * The callee decides a peer under its certificate's labels and the control plane's directory's, the
 * stricter winning: a workload relabelled at the control plane (quarantined) is refused at once by its
 * callees, before it renews its certificate, on new requests over pooled connections, and its open
 * mesh connections and tunnels are cut; a stale directory cannot widen what its certificate says.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { labelsWithProvenance } from "../../core/label-provenance.ts";
import type { AttestedLabel } from "../../core/labels.ts";
import { DirectoryLabels } from "../../sidecar/inputs/directory-labels.ts";
import type { App, HttpApp } from "../support/sidecar-apps.ts";
import { RawHttpConnection, startHttpApp, startTcpApp } from "../support/sidecar-apps.ts";
import type { SidecarPair } from "../support/sidecar-mesh.ts";
import { policySet, startPair } from "../support/sidecar-mesh.ts";
import net from "node:net";

/** How long a cut may take to be seen: the cut itself runs when the directory is applied. */
const BOUND_MS = 5_000;

let app: HttpApp;
let banner: App;
let pair: SidecarPair;

const ingress = (): string => `
apiVersion: sigil.dev/v1
kind: AuthorizationPolicy
metadata: { name: api }
spec:
  selector: { matchLabels: { app: api } }
  ingress:
    - action: deny
      from: [ { matchExpressions: [ { key: vuln.critical, operator: Gt, value: 0 } ] } ]
    - action: allow
      from: [ { matchLabels: { app: web } } ]
      ports: [ ${app.port} ]
      http: { methods: [ GET ], paths: [ "/api/**" ] }
    - action: allow
      from: [ { matchLabels: { app: web } } ]
      ports: [ ${banner.port} ]
`;

/** Labels as the control plane publishes them: with their provenance classes. */
function published(labels: Record<string, string>, scanner: Record<string, string> = {}) {
  const attested: AttestedLabel[] = [
    ...Object.entries(labels).map(([key, value]) => ({ key, value, provenance: "static" as const })),
    ...Object.entries(scanner).map(([key, value]) => ({ key, value, provenance: "scanner" as const })),
  ];
  return labelsWithProvenance(attested);
}

const web = (): string => pair.pki.spiffeId("web");
const directory = (labels: Record<string, string>, scanner?: Record<string, string>): DirectoryLabels =>
  DirectoryLabels.of([[web(), published(labels, scanner)]]);

async function within(what: string, probe: () => boolean): Promise<void> {
  const deadline = Date.now() + BOUND_MS;
  while (!probe()) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${BOUND_MS} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const get = (conn: RawHttpConnection, path: string) =>
  conn.request(`GET ${path} HTTP/1.1\r\nHost: api\r\n\r\n`);

beforeAll(async () => {
  app = await startHttpApp();
  banner = await startTcpApp("banner");
  pair = await startPair({ appPorts: [app.port, banner.port], protocols: { [banner.port]: "tcp" } });
  pair.b.policy.update({ policies: policySet(ingress()) });
});

afterAll(async () => {
  await pair?.close();
  await app?.close();
  await banner?.close();
});

afterEach(() => pair.b.policy.update({ peerLabels: DirectoryLabels.empty() }));

describe("a peer relabelled in the control plane's directory", () => {
  it("is refused on a kept-alive connection and has its open mesh connection closed, with its old certificate", async () => {
    pair.b.policy.update({ peerLabels: directory({ app: "web" }) });
    const creds = await pair.pki.credentials("web", { app: "web" });
    // The caller's sidecar detects the protocol from the first bytes, so the request follows at once.
    const viaCaller = await RawHttpConnection.open(pair.outboundPort(app.port));
    let direct: RawHttpConnection | undefined;
    try {
      expect((await get(viaCaller, "/api/before")).status).toBe(200);
      direct = RawHttpConnection.over(await pair.meshConnect(creds, "http1", app.port));
      expect((await get(direct, "/api/before-direct")).status).toBe(200);

      pair.b.policy.update({ peerLabels: directory({ app: "web" }, { "vuln.critical": "3" }) });
      await within("the open mesh connection closed by the callee", () => direct?.closed === true);
      const denied = await get(viaCaller, "/api/after");
      expect(denied.status).toBe(403);
      expect(JSON.parse(denied.body).reason).toMatch(/denied by api\/ingress\/0 .*directory/);
      const flow = await pair.b.flows.next((r) => r.http?.path === "/api/after");
      expect(flow).toMatchObject({ verdict: "deny", policy: "api/ingress/0" });
      // The certificate still says what it said: the flow names the proven labels.
      expect(flow.source.labels["vuln.critical"]).toBeUndefined();

      pair.b.policy.update({ peerLabels: directory({ app: "web" }) });
      expect((await get(viaCaller, "/api/restored")).status).toBe(200);
    } finally {
      viaCaller.close();
      direct?.close();
    }
    expect(app.seen.some((r) => r.url === "/api/after")).toBe(false);
  });

  it("has its open TCP tunnel cut", async () => {
    const socket = net.connect(pair.outboundPort(banner.port), "127.0.0.1");
    socket.on("error", () => undefined);
    let received = "";
    let closed = false;
    socket.on("data", (c: Buffer) => (received += c.toString()));
    socket.on("close", () => (closed = true));
    try {
      await within("the banner through the tunnel", () => received.includes("220 ready"));
      pair.b.policy.update({ peerLabels: directory({ app: "web" }, { "vuln.critical": "3" }) });
      await within("the tunnel cut", () => closed);
    } finally {
      socket.destroy();
    }
  });

  it("cannot widen what its certificate says: a stale directory entry leaves the certificate's denial", async () => {
    const creds = await pair.pki.credentials("web", { app: "web", "vuln.critical": "3" });
    pair.b.policy.update({ peerLabels: directory({ app: "web" }) });
    const conn = RawHttpConnection.over(await pair.meshConnect(creds, "http1", app.port));
    try {
      const denied = await get(conn, "/api/stale-directory");
      expect(denied.status).toBe(403);
      expect(JSON.parse(denied.body).reason).toBe("denied by api/ingress/0");
    } finally {
      conn.close();
    }
  });
});
