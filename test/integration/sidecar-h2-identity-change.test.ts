/**
 * An HTTP/2 client (a gRPC channel, typically) keeps one connection to its sidecar for as long as it
 * runs. When the workload's labels change (a scanner's finding, a quarantine), the callee must see
 * the new certificate on that client's next stream: the upstream connection opened with the old
 * one is retired, streams in flight finish on it, and new streams go over a connection that
 * presents the new certificate. Both HTTP/2 engines are held to it.
 */
import http2 from "node:http2";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { App } from "../support/sidecar-apps.ts";
import { startH2App } from "../support/sidecar-apps.ts";
import type { SidecarPair } from "../support/sidecar-mesh.ts";
import { policySet, startPair } from "../support/sidecar-mesh.ts";

let app: App;

beforeAll(async () => {
  app = await startH2App();
});

afterAll(async () => {
  await app?.close();
});

const ingress = (port: number): string => `
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
      ports: [ ${port} ]
`;

function status(session: http2.ClientHttp2Session, path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = session.request({ ":path": path });
    let code = 0;
    req.on("response", (h) => (code = Number(h[":status"])));
    req.on("data", () => undefined);
    req.on("end", () => resolve(code));
    req.on("error", reject);
    req.end();
  });
}

describe.each(["relay", "sessions"] as const)(
  "a caller's labels change under an open HTTP/2 connection (%s)",
  (engine) => {
    let pair: SidecarPair;

    beforeAll(async () => {
      const config = { http2Engine: engine };
      pair = await startPair({ appPorts: [app.port], configA: config, configB: config });
      pair.b.policy.update({ policies: policySet(ingress(app.port)) });
    });

    afterAll(async () => {
      await pair?.close();
    });

    it("its next stream is decided under the new certificate, on the same client connection", async () => {
      const session = http2.connect(`http://127.0.0.1:${pair.outboundPort(app.port)}`);
      try {
        expect(await status(session, `/api/before-${engine}`)).toBe(200);
        const rotated = new Promise<void>((resolve) => pair.a.credentials.once("rotate", () => resolve()));
        pair.a.credentials.set(await pair.pki.credentials("web", { app: "web", "vuln.critical": "3" }));
        await rotated;
        expect(await status(session, `/api/after-${engine}`)).toBe(403);
        const flow = await pair.b.flows.next((r) => r.http?.path === `/api/after-${engine}`);
        expect(flow).toMatchObject({ verdict: "deny", policy: "api/ingress/0" });
        expect(flow.source.labels["vuln.critical"]).toBe("3");
        expect(app.seen.some((r) => r.url === `/api/after-${engine}`)).toBe(false);
      } finally {
        session.close();
      }
    });
  },
);
