import { promises as dns } from "node:dns";
import http2 from "node:http2";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import net from "node:net";
import tls from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EgressNameResolver } from "../../sidecar/egress/dns.ts";
import type { Sidecar } from "../../sidecar/sidecar.ts";
import { startSidecar } from "../../sidecar/sidecar.ts";
import { CredentialHolder, PeerDirectoryHolder, PolicyHolder } from "../../sidecar/inputs/state.ts";
import type { TestDnsServer } from "../support/dns-server.ts";
import { startDnsServer } from "../support/dns-server.ts";
import type { App, HttpApp } from "../support/sidecar-apps.ts";
import {
  RawHttpConnection,
  rawExchange,
  startH2App,
  startHttpApp,
  startTcpApp,
} from "../support/sidecar-apps.ts";
import { FlowCollector, MeshPki, TRUST_DOMAIN, policySet, quiet } from "../support/sidecar-mesh.ts";

/**
 * A DNS-name egress allow only holds for a destination address the name resolves to. The sidecar
 * runs in captured mode (the original destination is what the application connected to) and in
 * explicit mode, resolving through a DNS server this suite runs on loopback.
 */

const LOOKUP_TIMEOUT_MS = 300;

let dnsServer: TestDnsServer;
let app: HttpApp;
let tcp: App;
let h2: App;
let pki: MeshPki;
let policy: PolicyHolder;
let flows: FlowCollector;
let captured: Sidecar;
let explicit: Sidecar;
/** Where the application "connected" for the captured sidecar's next connection. */
let originalDestination = { address: "127.0.0.1", port: 0 };

const EGRESS = (appPort: number, tcpPort: number, h2Port: number) => `
apiVersion: sigil.dev/v1
kind: AuthorizationPolicy
metadata: { name: web-egress }
spec:
  selector: { matchLabels: { app: web } }
  egress:
    - action: allow
      to: [ { dnsNames: [ "api.partner.test", "spoofed.partner.test", "gone.partner.test", "slow.partner.test", "*.wild.test" ] } ]
      ports: [ ${appPort}, ${tcpPort}, ${h2Port} ]
    - action: allow
      to: [ { cidrs: [ "127.0.0.0/8" ] } ]
      http: { paths: [ "/by-address" ] }
`;

function request(port: number, host: string, path = "/x"): Promise<{ data: string; reset: boolean }> {
  return rawExchange(port, `GET ${path} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`);
}

/** The bytes of a real TLS ClientHello naming `servername`, captured from node:tls on loopback. */
function clientHello(servername: string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const server = net.createServer((socket) => {
      socket.once("data", (chunk: Buffer) => {
        socket.destroy();
        server.close();
        resolve(chunk);
      });
    });
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as net.AddressInfo;
      tls.connect({ port, host: "127.0.0.1", servername }).on("error", () => undefined);
    });
    server.on("error", reject);
  });
}

/** Sends `payload`, half-closes, and collects the answer until the connection closes. */
function sendAndEnd(port: number, payload: Buffer): Promise<{ data: string; reset: boolean }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host: "127.0.0.1", allowHalfOpen: true }, () => socket.end(payload));
    const chunks: Buffer[] = [];
    let reset = false;
    socket.on("data", (c: Buffer) => chunks.push(c));
    socket.on("error", (err: NodeJS.ErrnoException) => {
      if (err.code === "ECONNRESET") reset = true;
      else reject(err);
    });
    socket.on("close", () => resolve({ data: Buffer.concat(chunks).toString("latin1"), reset }));
  });
}

function reasonOf(data: string): string {
  return (JSON.parse(data.slice(data.indexOf("\r\n\r\n") + 4)) as { reason: string }).reason;
}

beforeAll(async () => {
  dnsServer = await startDnsServer();
  dnsServer.zone.set("api.partner.test", { a: ["127.0.0.1"], ttl: 60 });
  dnsServer.zone.set("spoofed.partner.test", { a: ["198.18.0.7"], aaaa: ["2001:db8::7"], ttl: 60 });
  dnsServer.zone.set("a.wild.test", { aaaa: ["::1"], a: ["127.0.0.1"], ttl: 60 });
  dnsServer.zone.set("elsewhere.wild.test", { a: ["198.18.0.9"], ttl: 60 });
  dnsServer.silent.add("slow.partner.test");
  app = await startHttpApp();
  tcp = await startTcpApp("echo");
  h2 = await startH2App();
  pki = await MeshPki.create();
  policy = new PolicyHolder({
    trustDomain: TRUST_DOMAIN,
    policies: policySet(EGRESS(app.port, tcp.port, h2.port)),
  });
  flows = new FlowCollector();
  const common = {
    credentials: new CredentialHolder(await pki.credentials("web", { app: "web" })),
    policy,
    peers: new PeerDirectoryHolder(),
    flows,
    logger: quiet,
  };
  const base = {
    admin: { port: 0 },
    inbound: { host: "127.0.0.1", port: 0 },
    logLevel: "silent" as const,
    detectTimeoutMs: 200,
    egressDns: { servers: [dnsServer.server], timeoutMs: LOOKUP_TIMEOUT_MS },
  };
  captured = await startSidecar({
    ...common,
    config: { ...base, mode: "captured", outbound: { host: "127.0.0.1", port: 0 } },
    originalDestination: () => originalDestination,
  });
  explicit = await startSidecar({
    ...common,
    config: {
      ...base,
      mode: "explicit",
      outbound: { targets: [{ port: 0, destination: { host: "127.0.0.1", port: app.port } }] },
    },
  });
});

afterAll(async () => {
  await Promise.all([captured?.close(), explicit?.close()]);
  await Promise.all([app?.close(), tcp?.close(), h2?.close(), dnsServer?.close(), pki?.close()]);
});

function capturedPort(): number {
  const port = captured.outbound?.port;
  if (port === undefined) throw new Error("captured sidecar has no outbound listener");
  return port;
}

describe("captured mode", () => {
  it("allows a name that resolves to the address the application connected to", async () => {
    originalDestination = { address: "127.0.0.1", port: app.port };
    const res = await request(capturedPort(), "api.partner.test");
    expect(res.data).toMatch(/^HTTP\/1\.1 200 /);
    const flow = await flows.next((r) => r.http?.path === "/x" && r.verdict === "allow");
    expect(flow).toMatchObject({
      policy: "web-egress/egress/0",
      destination: { address: "api.partner.test" },
    });
  });

  it("denies an allowed name claimed for an address it does not resolve to", async () => {
    originalDestination = { address: "127.0.0.1", port: app.port };
    const before = app.seen.length;
    const res = await request(capturedPort(), "spoofed.partner.test", "/spoof");
    expect(res.data).toMatch(/^HTTP\/1\.1 403 /);
    const reason = reasonOf(res.data);
    expect(reason).toContain("spoofed.partner.test");
    expect(reason).toContain("127.0.0.1");
    expect(reason).toContain("198.18.0.7");
    expect(app.seen.length).toBe(before);
    const flow = await flows.next((r) => r.http?.path === "/spoof");
    expect(flow).toMatchObject({ verdict: "deny", policy: null });
  });

  it("denies a name that does not resolve, naming it and the address", async () => {
    originalDestination = { address: "127.0.0.1", port: app.port };
    const res = await request(capturedPort(), "gone.partner.test");
    expect(res.data).toMatch(/^HTTP\/1\.1 403 /);
    expect(reasonOf(res.data)).toMatch(
      /gone\.partner\.test could not be resolved to check 127\.0\.0\.1: ENOTFOUND/,
    );
  });

  it("denies when the lookup does not answer within its bound", async () => {
    originalDestination = { address: "127.0.0.1", port: app.port };
    const started = Date.now();
    const res = await request(capturedPort(), "slow.partner.test");
    expect(res.data).toMatch(/^HTTP\/1\.1 403 /);
    expect(reasonOf(res.data)).toMatch(/slow\.partner\.test could not be resolved .*timed out/);
    expect(Date.now() - started).toBeLessThan(LOOKUP_TIMEOUT_MS + 4_000);
  });

  it("resolves the concrete name a client gives under a wildcard", async () => {
    originalDestination = { address: "127.0.0.1", port: app.port };
    expect((await request(capturedPort(), "a.wild.test")).data).toMatch(/^HTTP\/1\.1 200 /);
    const denied = await request(capturedPort(), "elsewhere.wild.test");
    expect(denied.data).toMatch(/^HTTP\/1\.1 403 /);
    expect(reasonOf(denied.data)).toContain("elsewhere.wild.test does not resolve to 127.0.0.1");
    expect(dnsServer.queries("a.wild.test")).toBeGreaterThan(0);
  });

  it("decides a name first claimed later on a connection once its lookup answers, without denying it first", async () => {
    originalDestination = { address: "127.0.0.1", port: app.port };
    dnsServer.zone.set("late.wild.test", { a: ["127.0.0.1"], ttl: 60 });
    dnsServer.zone.set("late-elsewhere.wild.test", { a: ["198.18.0.9"], ttl: 60 });
    const conn = await RawHttpConnection.open(capturedPort());
    try {
      expect((await conn.request("GET /x HTTP/1.1\r\nHost: api.partner.test\r\n\r\n")).status).toBe(200);
      expect(dnsServer.queries("late.wild.test")).toBe(0);
      const late = await conn.request("GET /late HTTP/1.1\r\nHost: late.wild.test\r\n\r\n");
      expect(late.status).toBe(200);
      expect(dnsServer.queries("late.wild.test")).toBeGreaterThan(0);
      const elsewhere = await conn.request(
        "GET /elsewhere HTTP/1.1\r\nHost: late-elsewhere.wild.test\r\n\r\n",
      );
      expect(elsewhere.status).toBe(403);
      expect(JSON.parse(elsewhere.body)).toMatchObject({
        reason:
          "dns-binding: late-elsewhere.wild.test does not resolve to 127.0.0.1 (resolves to 198.18.0.9)",
      });
    } finally {
      conn.close();
    }
  });

  it("holds pipelined requests while a late name resolves and answers them in order", async () => {
    originalDestination = { address: "127.0.0.1", port: app.port };
    dnsServer.zone.set("piped.wild.test", { a: ["127.0.0.1"], ttl: 60 });
    const res = await rawExchange(
      capturedPort(),
      "GET /pipe-1 HTTP/1.1\r\nHost: api.partner.test\r\n\r\n" +
        "POST /pipe-2 HTTP/1.1\r\nHost: piped.wild.test\r\nContent-Length: 5\r\n\r\nhello" +
        "GET /pipe-3 HTTP/1.1\r\nHost: api.partner.test\r\nConnection: close\r\n\r\n",
    );
    expect(res.data.match(/HTTP\/1\.1 200 /g)).toHaveLength(3);
    const urls = app.seen.map((r) => r.url).filter((u) => u.startsWith("/pipe-"));
    expect(urls).toEqual(["/pipe-1", "/pipe-2", "/pipe-3"]);
    expect(app.seen.find((r) => r.url === "/pipe-2")?.body).toBe("hello");
  });

  it("decides an HTTP/2 stream whose :authority names a late name once its lookup answers", async () => {
    originalDestination = { address: "127.0.0.1", port: h2.port };
    dnsServer.zone.set("late-h2.wild.test", { a: ["127.0.0.1"], ttl: 60 });
    const session = http2.connect(`http://127.0.0.1:${capturedPort()}`);
    session.on("error", () => undefined);
    try {
      const status = (authority: string, path: string): Promise<number> =>
        new Promise((resolve, reject) => {
          const req = session.request({ ":path": path, ":authority": authority }, { endStream: true });
          req.on("response", (h) => resolve(Number(h[":status"])));
          req.on("error", reject);
          req.resume();
        });
      expect(await status("api.partner.test", "/h2-first")).toBe(200);
      expect(dnsServer.queries("late-h2.wild.test")).toBe(0);
      expect(await status("late-h2.wild.test", "/h2-late")).toBe(200);
      expect(dnsServer.queries("late-h2.wild.test")).toBeGreaterThan(0);
      expect(h2.seen.map((r) => r.url)).toContain("/h2-late");
    } finally {
      session.close();
    }
  });

  it("denies a late name whose lookup does not answer within its bound, naming why", async () => {
    originalDestination = { address: "127.0.0.1", port: app.port };
    dnsServer.silent.add("silent.wild.test");
    const conn = await RawHttpConnection.open(capturedPort());
    try {
      expect((await conn.request("GET /x HTTP/1.1\r\nHost: api.partner.test\r\n\r\n")).status).toBe(200);
      const late = await conn.request("GET /silent HTTP/1.1\r\nHost: silent.wild.test\r\n\r\n");
      expect(late.status).toBe(403);
      expect(JSON.parse(late.body)).toMatchObject({
        reason: `dns-binding: silent.wild.test could not be resolved to check 127.0.0.1: lookup timed out after ${LOOKUP_TIMEOUT_MS} ms`,
      });
    } finally {
      conn.close();
    }
  });

  it("still allows by address where a CIDR rule does, whatever name is claimed", async () => {
    originalDestination = { address: "127.0.0.1", port: app.port };
    expect((await request(capturedPort(), "spoofed.partner.test", "/by-address")).data).toMatch(
      /^HTTP\/1\.1 200 /,
    );
  });

  it("checks the TLS SNI of an opaque connection the same way", async () => {
    originalDestination = { address: "127.0.0.1", port: tcp.port };
    const spoofed = await sendAndEnd(capturedPort(), await clientHello("spoofed.partner.test"));
    expect(spoofed).toEqual({ data: "", reset: true });
    const allowed = await sendAndEnd(capturedPort(), await clientHello("api.partner.test"));
    expect(allowed).toMatchObject({ reset: false, data: expect.stringMatching(/^got \d+ bytes/) });
    const denied = await flows.next((r) => r.protocol === "tcp" && r.verdict === "deny");
    expect(denied.reason).toContain("spoofed.partner.test does not resolve to 127.0.0.1");
  });

  it("reports a mismatch in observe mode and lets it through", async () => {
    originalDestination = { address: "127.0.0.1", port: app.port };
    policy.update({ mode: "observe" });
    try {
      const res = await request(capturedPort(), "spoofed.partner.test", "/observed");
      expect(res.data).toMatch(/^HTTP\/1\.1 200 /);
      const flow = await flows.next((r) => r.http?.path === "/observed");
      expect(flow).toMatchObject({ verdict: "allow", wouldDeny: true });
      expect(flow.reason).toContain("spoofed.partner.test does not resolve to 127.0.0.1");
    } finally {
      policy.update({ mode: "enforce" });
    }
  });
});

describe("explicit mode", () => {
  it("checks a claimed name against the configured upstream address", async () => {
    const port = explicit.outboundTargets[0]?.port ?? 0;
    expect((await request(port, "api.partner.test")).data).toMatch(/^HTTP\/1\.1 200 /);
    const denied = await request(port, "spoofed.partner.test:8080");
    expect(denied.data).toMatch(/^HTTP\/1\.1 403 /);
    expect(reasonOf(denied.data)).toContain("spoofed.partner.test does not resolve to 127.0.0.1");
  });
});

describe("the resolver cache", () => {
  function resolverAt(clock: { now: number }, options = {}): EgressNameResolver {
    const r = new dns.Resolver({ timeout: LOOKUP_TIMEOUT_MS, tries: 1 });
    r.setServers([dnsServer.server]);
    return new EgressNameResolver({ timeoutMs: LOOKUP_TIMEOUT_MS, ...options }, r, () => clock.now);
  }

  it("honours record TTLs: answers are reused within them and looked up again after", async () => {
    dnsServer.zone.set("ttl.cache.test", { a: ["198.18.1.1"], ttl: 30 });
    const clock = { now: 1_000_000 };
    const names = resolverAt(clock);
    await names.prepare(["ttl.cache.test"], "198.18.1.1");
    const queries = dnsServer.queries("ttl.cache.test");
    expect(names.check("ttl.cache.test", "198.18.1.1")).toEqual({ kind: "bound" });
    clock.now += 29_000;
    await names.prepare(["ttl.cache.test"], "198.18.1.1");
    expect(dnsServer.queries("ttl.cache.test")).toBe(queries);
    dnsServer.zone.set("ttl.cache.test", { a: ["198.18.1.2"], ttl: 30 });
    clock.now += 2_000;
    expect(names.check("TTL.cache.test.", "198.18.1.1")).toEqual({ kind: "unresolved" });
    await names.prepare(["ttl.cache.test"], "198.18.1.1");
    expect(dnsServer.queries("ttl.cache.test")).toBeGreaterThan(queries);
    expect(names.check("ttl.cache.test", "198.18.1.2")).toEqual({ kind: "bound" });
    expect(names.check("ttl.cache.test", "198.18.1.1")).toEqual({
      kind: "mismatch",
      addresses: ["198.18.1.2"],
    });
  });

  it("matches IPv4-mapped and uncompressed IPv6 destination addresses", async () => {
    dnsServer.zone.set("v6.cache.test", { a: ["198.18.2.1"], aaaa: ["2001:db8::5"], ttl: 30 });
    const names = resolverAt({ now: 0 });
    await names.prepare(["v6.cache.test"], "::ffff:198.18.2.1");
    expect(names.check("v6.cache.test", "::ffff:198.18.2.1")).toEqual({ kind: "bound" });
    expect(names.check("v6.cache.test", "2001:0db8:0:0:0:0:0:0005")).toEqual({ kind: "bound" });
  });

  it("keeps at most maxEntries names", async () => {
    const names = resolverAt({ now: 0 }, { maxEntries: 3 });
    for (let i = 0; i < 6; i++) dnsServer.zone.set(`n${i}.cache.test`, { a: ["198.18.3.1"], ttl: 30 });
    await names.prepare(
      Array.from({ length: 6 }, (_, i) => `n${i}.cache.test`),
      "198.18.3.1",
    );
    expect(names.size).toBe(3);
  });

  it("answers names in the host table from it before DNS, and reads the table again after an edit", async () => {
    dnsServer.zone.set("files.cache.test", { a: ["198.18.4.9"], ttl: 30 });
    dnsServer.zone.set("dns-only.cache.test", { a: ["198.18.4.7"], ttl: 30 });
    const dir = await mkdtemp(join(tmpdir(), "sigil-hosts-"));
    try {
      const hostsFile = join(dir, "hosts");
      await writeFile(hostsFile, "# static names\n198.18.4.1 Files.Cache.Test. alias.cache.test  # app\n");
      const clock = { now: 1_000_000 };
      const names = resolverAt(clock, { hostsFile });
      await names.prepare(["files.cache.test", "alias.cache.test", "dns-only.cache.test"], "198.18.4.1");
      expect(dnsServer.queries("files.cache.test")).toBe(0);
      expect(names.check("files.cache.test", "198.18.4.1")).toEqual({ kind: "bound" });
      expect(names.check("alias.cache.test", "198.18.4.1")).toEqual({ kind: "bound" });
      expect(names.check("files.cache.test", "198.18.4.9")).toEqual({
        kind: "mismatch",
        addresses: ["198.18.4.1"],
      });
      expect(names.check("dns-only.cache.test", "198.18.4.7")).toEqual({ kind: "bound" });

      await writeFile(hostsFile, "198.18.4.2 files.cache.test\n");
      clock.now += 6_000;
      await names.prepare(["files.cache.test"], "198.18.4.2");
      expect(names.check("files.cache.test", "198.18.4.2")).toEqual({ kind: "bound" });
      expect(names.check("files.cache.test", "198.18.4.1").kind).toBe("mismatch");
      expect(dnsServer.queries("files.cache.test")).toBe(0);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("asks DNS when the host table is missing or switched off", async () => {
    dnsServer.zone.set("nofile.cache.test", { a: ["198.18.4.5"], ttl: 30 });
    const asked: number[] = [];
    for (const hostsFile of ["/nonexistent/hosts", ""]) {
      const names = resolverAt({ now: 0 }, { hostsFile });
      await names.prepare(["nofile.cache.test"], "198.18.4.5");
      expect(names.check("nofile.cache.test", "198.18.4.5")).toEqual({ kind: "bound" });
      asked.push(dnsServer.queries("nofile.cache.test"));
    }
    expect(asked[0]).toBeGreaterThan(0);
    expect(asked[1]).toBe(2 * (asked[0] as number));
  });

  it("never queries for localhost names", async () => {
    const names = resolverAt({ now: 0 });
    await names.prepare(["localhost", "app.localhost"], "127.0.0.1");
    expect(dnsServer.queries("localhost") + dnsServer.queries("app.localhost")).toBe(0);
    expect(names.check("localhost", "127.0.0.1")).toEqual({ kind: "bound" });
    expect(names.check("localhost", "198.18.0.1").kind).toBe("mismatch");
  });
});
