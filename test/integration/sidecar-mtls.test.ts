import { X509Certificate } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import tls from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CertificateAuthority } from "../../controlplane/ca/authority.ts";
import { generateP256 } from "../../controlplane/ca/keys.ts";
import { bundleRootsPem } from "../../core/svid/bundle.ts";
import { RevocationIndex, canonicalSerial } from "../../core/svid/revocation.ts";
import type { TlsCredentials } from "../../sidecar/inputs/sources.ts";
import { apiIngressPolicy } from "../support/api-ingress.ts";
import type { App } from "../support/sidecar-apps.ts";
import { RawHttpConnection, rawExchange, startHttpApp } from "../support/sidecar-apps.ts";
import type { SidecarPair } from "../support/sidecar-mesh.ts";
import { TRUST_DOMAIN, policySet, startPair } from "../support/sidecar-mesh.ts";

/**
 * Peer authentication on the mTLS hop (forged, expired, wrong-trust-domain, revoked and unexpected
 * peers), STRICT refusing plaintext, rotation without dropped connections, egress control and
 * observe mode.
 */

let app: App & { connections: () => number };
let external: App & { connections: () => number };
let pair: SidecarPair;

beforeAll(async () => {
  app = await startHttpApp();
  external = await startHttpApp();
  pair = await startPair({
    appPorts: [app.port],
    externalTargets: [
      { host: "localhost", port: external.port },
      { host: "127.0.0.1", port: external.port },
    ],
    configB: { inbound: { host: "127.0.0.1", port: 0, plaintextAppPort: app.port } },
  });
  pair.b.policy.update({
    policies: policySet(apiIngressPolicy({ ports: [app.port], methods: ["GET"], paths: ["/api/**"] })),
  });
});

afterAll(async () => {
  await pair?.close();
  await app?.close();
  await external?.close();
});

/** A hand-made mesh client: speaks the mesh ALPN to B's inbound with whatever credentials it is given. */
function meshRequest(creds: TlsCredentials, path = "/api/x"): Promise<{ data: string; authorized: boolean }> {
  return new Promise((resolve) => {
    const socket = tls.connect({
      host: "127.0.0.1",
      port: pair.b.sidecar.inbound.port,
      key: creds.privateKeyPem,
      cert: creds.certChainPem,
      ca: bundleRootsPem(pair.pki.ca.bundle()),
      ALPNProtocols: [`sigil/1;http1;${app.port}`],
      checkServerIdentity: () => undefined,
    });
    let data = "";
    socket.on("secureConnect", () =>
      socket.write(`GET ${path} HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n`),
    );
    socket.on("data", (c: Buffer) => (data += c.toString()));
    socket.on("error", () => undefined);
    socket.on("close", () => resolve({ data, authorized: socket.authorized }));
  });
}

/** A revocation list naming one certificate of one of the test PKI's workloads. */
function certificateRevoked(serial: string, name: string, reason: string, sequence: number): RevocationIndex {
  return new RevocationIndex({
    trustDomain: TRUST_DOMAIN,
    sequence,
    entries: [],
    certificates: [
      {
        serial,
        spiffeId: pair.pki.spiffeId(name),
        revokedAtMs: Date.now(),
        expiresAtMs: Date.now() + 3_600_000,
        reason,
      },
    ],
  });
}

/** A revocation list naming one of the test PKI's workloads. */
function revocationOf(name: string, reason: string, sequence: number): RevocationIndex {
  return new RevocationIndex({
    trustDomain: TRUST_DOMAIN,
    sequence,
    entries: [
      {
        spiffeId: pair.pki.spiffeId(name),
        revokedAtMs: Date.now(),
        expiresAtMs: Date.now() + 3_600_000,
        reason,
      },
    ],
  });
}

describe("peer authentication at the callee", () => {
  it("accepts a valid mesh client", async () => {
    const creds = await pair.pki.credentials("web", { app: "web" });
    const res = await meshRequest(creds);
    expect(res.data).toMatch(/^HTTP\/1\.1 200 /);
  });

  it("refuses a client certificate from another CA in the same trust domain", async () => {
    const before = app.seen.length;
    const forged = await pair.pki.credentials("web", { app: "web" }, { rogue: true });
    const res = await meshRequest(forged);
    expect(res.data).toBe("");
    expect(app.seen.length).toBe(before);
    const flow = await pair.b.flows.next(
      (r) => r.reason.startsWith("peer-rejected") || r.reason.startsWith("tls-error"),
    );
    expect(flow.verdict).toBe("deny");
  });

  it("refuses an expired client certificate", async () => {
    const expired = await pair.pki.credentials(
      "web",
      { app: "web" },
      { ttlSeconds: 1, now: new Date(Date.now() - 10_000) },
    );
    const res = await meshRequest(expired);
    expect(res.data).toBe("");
  });

  it("refuses a certificate from a different trust domain", async () => {
    const dir = await mkdtemp(join(tmpdir(), "sigil-othertd-"));
    try {
      const other = await CertificateAuthority.open({ dataDir: dir, trustDomain: "other.test" });
      const { keys, privatePem } = await generateP256();
      const issued = await other.issueSvid({
        publicKey: keys.publicKey,
        spiffeId: "spiffe://other.test/workload/web",
        labels: [{ key: "app", value: "web", provenance: "static" }],
        ttlSeconds: 600,
      });
      const res = await meshRequest({
        privateKeyPem: privatePem,
        certChainPem: issued.chain.map((d) => new X509Certificate(d).toString()).join(""),
        bundle: other.bundle(),
      });
      expect(res.data).toBe("");
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("refuses a revoked workload from the next handshake on", async () => {
    const creds = await pair.pki.credentials("web", { app: "web" });
    pair.b.policy.update({
      revocations: revocationOf("web", "test", 1),
    });
    try {
      expect((await meshRequest(creds)).data).toBe("");
      const flow = await pair.b.flows.next((r) => r.reason.includes("revoked"));
      expect(flow.verdict).toBe("deny");
    } finally {
      pair.b.policy.update({ revocations: RevocationIndex.empty(TRUST_DOMAIN) });
    }
  });

  it("closes a connection authenticated before the revocation; the caller's next request is refused", async () => {
    const conn = await RawHttpConnection.open(pair.outboundPort(app.port));
    try {
      expect((await conn.request("GET /api/before-revocation HTTP/1.1\r\nHost: api\r\n\r\n")).status).toBe(
        200,
      );
      const revokedAt = Date.now();
      pair.b.policy.update({
        revocations: revocationOf("web", "key compromise", 2),
      });
      // The callee closed the pooled connection; the caller's new handshake is refused as revoked.
      const denied = await conn.request("GET /api/after-revocation HTTP/1.1\r\nHost: api\r\n\r\n");
      expect(denied.status).toBe(502);
      const refusal = await pair.b.flows.next(
        (r) => r.time >= revokedAt && r.reason.includes("revoked") && r.reason.includes("key compromise"),
      );
      expect(refusal.verdict).toBe("deny");
    } finally {
      conn.close();
      pair.b.policy.update({ revocations: RevocationIndex.empty(TRUST_DOMAIN) });
    }
    expect(app.seen.some((r) => r.url === "/api/after-revocation")).toBe(false);
  });

  it("refuses one certificate revoked by serial on its open connection and its next handshake, while another certificate of the same workload still works", async () => {
    const leaked = await pair.pki.credentials("web", { app: "web" });
    const renewed = await pair.pki.credentials("web", { app: "web" });
    const conn = RawHttpConnection.over(await pair.meshConnect(leaked, "http1", app.port));
    const revokedSerial = canonicalSerial(leaked.serial);
    try {
      expect((await conn.request("GET /api/before-serial HTTP/1.1\r\nHost: api\r\n\r\n")).status).toBe(200);
      pair.b.policy.update({ revocations: certificateRevoked(revokedSerial, "web", "key leaked", 4) });
      // The open connection is closed by the callee at once; nothing more on it reaches the app.
      await expect(conn.request("GET /api/after-serial HTTP/1.1\r\nHost: api\r\n\r\n")).rejects.toThrow(
        /connection closed/,
      );
      // A new handshake with the revoked certificate fails; the workload's other certificate is served.
      expect((await meshRequest(leaked, "/api/leaked-again")).data).toBe("");
      const rejected = await pair.b.flows.next((r) => r.reason.includes(`certificate ${revokedSerial} of`));
      expect(rejected.verdict).toBe("deny");
      expect((await meshRequest(renewed, "/api/renewed")).data).toMatch(/^HTTP\/1\.1 200 /);
    } finally {
      conn.close();
      pair.b.policy.update({ revocations: RevocationIndex.empty(TRUST_DOMAIN) });
    }
    expect(app.seen.map((r) => r.url)).toEqual(
      expect.arrayContaining(["/api/before-serial", "/api/renewed"]),
    );
    expect(app.seen.some((r) => r.url === "/api/after-serial" || r.url === "/api/leaked-again")).toBe(false);
  });

  it("cuts the pooled connection to a destination whose certificate is revoked by serial, refuses it on the next handshake, and serves the destination's renewed certificate (egress side)", async () => {
    const conn = await RawHttpConnection.open(pair.outboundPort(app.port));
    const revokedSerial = canonicalSerial(pair.b.sidecar.identity().serial);
    try {
      expect((await conn.request("GET /api/dest-before-serial HTTP/1.1\r\nHost: api\r\n\r\n")).status).toBe(
        200,
      );
      pair.a.policy.update({ revocations: certificateRevoked(revokedSerial, "api", "key leaked", 5) });
      const refused = await conn.request("GET /api/dest-after-serial HTTP/1.1\r\nHost: api\r\n\r\n");
      expect(refused.status).toBe(502);
      expect(JSON.parse(refused.body).reason).toMatch(
        new RegExp(
          `^upstream: certificate ${revokedSerial} of spiffe://sigil\\.local/workload/api was revoked at \\S+ \\(key leaked\\)$`,
        ),
      );
      pair.b.credentials.set(await pair.pki.credentials("api", { app: "api" }));
      const next = await RawHttpConnection.open(pair.outboundPort(app.port));
      try {
        expect((await next.request("GET /api/dest-renewed HTTP/1.1\r\nHost: api\r\n\r\n")).status).toBe(200);
      } finally {
        next.close();
      }
    } finally {
      conn.close();
      pair.a.policy.update({ revocations: RevocationIndex.empty(TRUST_DOMAIN) });
    }
    expect(app.seen.some((r) => r.url === "/api/dest-after-serial")).toBe(false);
  });

  it("stops sending to a destination revoked after its connection was pooled (egress side)", async () => {
    const conn = await RawHttpConnection.open(pair.outboundPort(app.port));
    try {
      expect(
        (await conn.request("GET /api/before-dest-revocation HTTP/1.1\r\nHost: api\r\n\r\n")).status,
      ).toBe(200);
      pair.a.policy.update({
        revocations: revocationOf("api", "host compromised", 3),
      });
      const denied = await conn.request("GET /api/after-dest-revocation HTTP/1.1\r\nHost: api\r\n\r\n");
      expect(denied.status).toBe(403);
      expect(JSON.parse(denied.body).reason).toMatch(/^revoked: .*host compromised/);
    } finally {
      conn.close();
      pair.a.policy.update({ revocations: RevocationIndex.empty(TRUST_DOMAIN) });
    }
    expect(app.seen.some((r) => r.url === "/api/after-dest-revocation")).toBe(false);
  });

  it("refuses a hello without a well-formed mesh ALPN as a mesh peer (STRICT: plaintext refused)", async () => {
    const res = await rawExchange(pair.b.sidecar.inbound.port, "GET /api/x HTTP/1.1\r\nHost: api\r\n\r\n");
    expect(res.data).toBe("");
    const flow = await pair.b.flows.next((r) => r.reason.startsWith("mtls-required"));
    expect(flow).toMatchObject({ verdict: "deny", encrypted: false });
  });

  it("refuses a mesh hop that names the sidecar's own admin port", async () => {
    const creds = await pair.pki.credentials("web", { app: "web" });
    const res = await new Promise<string>((resolve) => {
      const socket = tls.connect({
        host: "127.0.0.1",
        port: pair.b.sidecar.inbound.port,
        key: creds.privateKeyPem,
        cert: creds.certChainPem,
        ca: bundleRootsPem(pair.pki.ca.bundle()),
        ALPNProtocols: [`sigil/1;http1;${pair.b.sidecar.admin.port}`],
        checkServerIdentity: () => undefined,
      });
      let data = "";
      socket.on("secureConnect", () => socket.write("GET /config_dump HTTP/1.1\r\nHost: x\r\n\r\n"));
      socket.on("data", (c: Buffer) => (data += c.toString()));
      socket.on("error", () => undefined);
      socket.on("close", () => resolve(data));
    });
    expect(res).toBe("");
  });
});

describe("the caller pins the callee's identity", () => {
  it("refuses a server that proves another SPIFFE ID than the directory names", async () => {
    const before = app.seen.length;
    const entry = pair.a.peers.lookup("127.0.0.1", app.port);
    expect(entry).not.toBeNull();
    pair.a.peers.replace([
      [
        { address: "127.0.0.1", port: app.port },
        { ...entry!, identity: { ...entry!.identity, spiffeId: pair.pki.spiffeId("db") } },
      ],
    ]);
    try {
      const res = await rawExchange(
        pair.outboundPort(app.port),
        "GET /api/pinned HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n",
      );
      expect(res.data).toMatch(/^HTTP\/1\.1 502 /);
      expect(app.seen.length).toBe(before);
    } finally {
      pair.a.peers.replace([[{ address: "127.0.0.1", port: app.port }, entry!]]);
    }
  });
});

describe("rotation", () => {
  it("uses the new certificate for new handshakes and keeps existing connections", async () => {
    const conn = await RawHttpConnection.open(pair.outboundPort(app.port));
    try {
      expect((await conn.request("GET /api/before HTTP/1.1\r\nHost: api\r\n\r\n")).status).toBe(200);
      const rotated = await pair.pki.credentials("api", { app: "api" });
      pair.b.credentials.set(rotated);
      expect(pair.b.sidecar.identity().serial).toBe(rotated.serial);
      expect((await conn.request("GET /api/after HTTP/1.1\r\nHost: api\r\n\r\n")).status).toBe(200);
      expect(conn.closed).toBe(false);
      const creds = await pair.pki.credentials("web", { app: "web" });
      const presented = await new Promise<string>((resolve, reject) => {
        const socket = tls.connect({
          host: "127.0.0.1",
          port: pair.b.sidecar.inbound.port,
          key: creds.privateKeyPem,
          cert: creds.certChainPem,
          ca: bundleRootsPem(pair.pki.ca.bundle()),
          ALPNProtocols: [`sigil/1;http1;${app.port}`],
          checkServerIdentity: () => undefined,
        });
        socket.on("secureConnect", () => {
          resolve(socket.getPeerX509Certificate()?.serialNumber ?? "");
          socket.destroy();
        });
        socket.on("error", reject);
      });
      expect(presented.toLowerCase()).toBe(rotated.serial.toLowerCase());
    } finally {
      conn.close();
    }
  });
});

describe("egress control at the caller", () => {
  const egress = (extra = ""): string => `
apiVersion: sigil.dev/v1
kind: AuthorizationPolicy
metadata: { name: web-egress }
spec:
  selector: { matchLabels: { app: web } }
  egress:
    - action: allow
      to: [ { matchLabels: { app: api } } ]
      http: { methods: [ GET ], paths: [ "/api/public/**" ] }
${extra}`;

  afterAll(() => pair.a.policy.update({ policies: policySet("") }));

  it("lets the caller reach only the APIs its egress policy names", async () => {
    pair.a.policy.update({ policies: policySet(egress()) });
    const before = app.seen.length;
    const conn = await RawHttpConnection.open(pair.outboundPort(app.port));
    try {
      expect((await conn.request("GET /api/public/a HTTP/1.1\r\nHost: api\r\n\r\n")).status).toBe(200);
      const denied = await conn.request("GET /api/private HTTP/1.1\r\nHost: api\r\n\r\n");
      expect(denied.status).toBe(403);
      expect(JSON.parse(denied.body).reason).toMatch(/default deny/);
    } finally {
      conn.close();
    }
    expect(app.seen.slice(before).map((r) => r.url)).toEqual(["/api/public/a"]);
    const flow = await pair.a.flows.next((r) => r.http?.path === "/api/private");
    expect(flow).toMatchObject({ direction: "egress", verdict: "deny" });
  });

  it("matches destinations outside the mesh by DNS name and by CIDR", async () => {
    pair.a.policy.update({ policies: policySet(egress()) });
    expect(
      (
        await rawExchange(
          pair.externalPort(0),
          "GET /x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        )
      ).data,
    ).toMatch(/^HTTP\/1\.1 403 /);
    expect(
      (
        await rawExchange(
          pair.externalPort(1),
          "GET /x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        )
      ).data,
    ).toMatch(/^HTTP\/1\.1 403 /);
    expect(external.seen).toEqual([]);
    pair.a.policy.update({
      policies: policySet(
        egress(`    - action: allow
      to: [ { dnsNames: [ "localhost" ] } ]
      ports: [ ${external.port} ]
    - action: allow
      to: [ { cidrs: [ "127.0.0.0/8" ] } ]
      http: { methods: [ GET ], paths: [ "/by-cidr" ] }`),
      ),
    });
    expect(
      (
        await rawExchange(
          pair.externalPort(0),
          "GET /by-name HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        )
      ).data,
    ).toMatch(/^HTTP\/1\.1 200 /);
    expect(
      (
        await rawExchange(
          pair.externalPort(1),
          "GET /by-cidr HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
      ).data,
    ).toMatch(/^HTTP\/1\.1 200 /);
    expect(
      (await rawExchange(pair.externalPort(1), "GET /other HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
        .data,
    ).toMatch(/^HTTP\/1\.1 403 /);
    expect(external.seen.map((r) => r.url)).toEqual(["/by-name", "/by-cidr"]);
    const flow = await pair.a.flows.next((r) => r.http?.path === "/by-name");
    expect(flow).toMatchObject({ verdict: "allow", encrypted: false, destination: { address: "localhost" } });
  });
});

describe("observe mode", () => {
  it("lets a denied request through and reports wouldDeny", async () => {
    pair.b.policy.update({ mode: "observe" });
    try {
      const res = await rawExchange(
        pair.outboundPort(app.port),
        "GET /not-allowed HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n",
      );
      expect(res.data).toMatch(/^HTTP\/1\.1 200 /);
      const flow = await pair.b.flows.next((r) => r.http?.path === "/not-allowed");
      expect(flow).toMatchObject({ verdict: "allow", wouldDeny: true });
    } finally {
      pair.b.policy.update({ mode: "enforce" });
    }
  });
});
