import { createHash } from "node:crypto";
import { once } from "node:events";
import http2 from "node:http2";
import type { IncomingHttpHeaders } from "node:http2";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { forwardedClientCert } from "../../sidecar/http/client-cert.ts";
import { parseSidecarConfig } from "../../sidecar/config.ts";
import type { TlsCredentials } from "../../sidecar/inputs/sources.ts";
import { fieldValues, leafDer, startH2Recorder, startHeadRecorder } from "../support/recording-apps.ts";
import type { H2Recorder, HeadRecorder } from "../support/recording-apps.ts";
import { EchoClient, echoService, rawExchange } from "../support/sidecar-apps.ts";
import type { SidecarPair } from "../support/sidecar-mesh.ts";
import { policySet, startPair } from "../support/sidecar-mesh.ts";

/**
 * The `x-forwarded-client-cert` field on a real sidecar pair on loopback, with applications that
 * keep every field exactly as it arrived: B sets it from the verified caller's certificate (HTTP/1.1,
 * upgrades, HTTP/2, gRPC), a client's own XFCC fields never reach an application in any form
 * (through A, or sent straight to B over mTLS or plaintext), policy decides on the field the
 * application receives, and "sanitize" sets none.
 */

const XFCC = "x-forwarded-client-cert";
/** Every forged value carries this marker, so a leak in any form (any field, any case) shows. */
const FORGED = "forged";

// --- applications that record exactly what reached them ---

/** gRPC app: the unary method records every XFCC value of the call's metadata, keyed by request. */
async function startGrpcRecorder(): Promise<{
  port: number;
  seen: Map<string, grpc.MetadataValue[]>;
  close(): Promise<void>;
}> {
  const seen = new Map<string, grpc.MetadataValue[]>();
  const server = new grpc.Server();
  const unimplemented = (_call: unknown, cb: grpc.sendUnaryData<Buffer>): void =>
    cb({ code: grpc.status.UNIMPLEMENTED });
  server.addService(echoService, {
    unary: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
      seen.set(call.request.toString(), call.metadata.get(XFCC));
      cb(null, Buffer.from("ok"));
    },
    serverStream: (call: grpc.ServerWritableStream<Buffer, Buffer>) => call.end(),
    bidi: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => call.end(),
    fail: unimplemented,
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, p) =>
      err ? reject(err) : resolve(p),
    ),
  );
  return { port, seen, close: () => new Promise((resolve) => server.tryShutdown(() => resolve())) };
}

// --- reading what arrived ---

function headFor(recorder: HeadRecorder, path: string): string {
  const head = recorder.heads.find((h) => h.startsWith(`GET ${path} `));
  if (head === undefined) throw new Error(`no request for ${path} reached the application`);
  return head;
}

function h2Values(recorder: H2Recorder, path: string, name: string): string[] {
  const request = recorder.requests.find((r) => r.path === path);
  if (request === undefined) throw new Error(`no HTTP/2 request for ${path} reached the application`);
  const values: string[] = [];
  for (let i = 0; i < request.raw.length; i += 2)
    if ((request.raw[i] as string).toLowerCase() === name) values.push(request.raw[i + 1] as string);
  expect(request.raw.join("\n").toLowerCase()).not.toContain(FORGED);
  return values;
}

/** What B must set for a caller presenting `creds` as `spiffeId`, written out field by field. */
function expectedXfcc(spiffeId: string, creds: TlsCredentials): string {
  const hash = createHash("sha256").update(leafDer(creds)).digest("hex");
  return `By=${pair.pki.spiffeId("api")};Hash=${hash};URI=${spiffeId}`;
}

// --- clients ---

/** Forged XFCC fields: several, in mixed case. */
const FORGED_FIELDS =
  `X-Forwarded-Client-Cert: By=spiffe://sigil.local/workload/api;URI=spiffe://sigil.local/workload/${FORGED}-admin\r\n` +
  `x-forwarded-client-cert: Hash=${FORGED}\r\n` +
  `X-FORWARDED-CLIENT-CERT: URI="spiffe://sigil.local/workload/${FORGED},root"\r\n`;

/**
 * A request with the forged fields; `namedInConnection` also lists XFCC as a Connection option
 * (which alone makes a proxy drop every such field, so both kinds of request are tried).
 */
function forgedRequest(path: string, namedInConnection = false): string {
  const connection = namedInConnection ? "close, X-Forwarded-Client-CERT" : "close";
  return `GET ${path} HTTP/1.1\r\nHost: api\r\n${FORGED_FIELDS}Connection: ${connection}\r\n\r\n`;
}

/** Writes `text` on a mesh connection to B and collects everything until B closes it. */
async function meshExchange(creds: TlsCredentials, text: string): Promise<string> {
  const socket = await pair.meshConnect(creds, "http1", app.port);
  let data = "";
  socket.on("data", (c: Buffer) => (data += c.toString("latin1")));
  socket.on("error", () => undefined);
  const closed = once(socket, "close");
  socket.write(text);
  await closed;
  return data;
}

/** One HTTP/2 GET on `session` with `headers`; resolves with the status. */
function h2Get(session: http2.ClientHttp2Session, path: string, headers: Record<string, string | string[]>) {
  return new Promise<number>((resolve, reject) => {
    const req = session.request({ ":path": path, ...headers }, { endStream: true });
    let status = 0;
    req.on("response", (h: IncomingHttpHeaders) => (status = Number(h[":status"])));
    req.on("error", reject);
    req.resume();
    req.on("close", () => resolve(status));
  });
}

async function withH2Session<T>(
  connect: () => http2.ClientHttp2Session,
  use: (s: http2.ClientHttp2Session) => Promise<T>,
): Promise<T> {
  const session = connect();
  session.on("error", () => undefined);
  try {
    return await use(session);
  } finally {
    session.close();
  }
}

// --- the pair ---

let app: HeadRecorder;
let h2App: H2Recorder;
let grpcApp: Awaited<ReturnType<typeof startGrpcRecorder>>;
let external: HeadRecorder;
let externalH2: H2Recorder;
let pair: SidecarPair;
let sanitizeOnly: SidecarPair;

/** B lets any mesh workload and any loopback plaintext client in, except by the one deny rule. */
function ingressPolicy(mode: "PERMISSIVE" | "DISABLE", denyValue: string): string {
  return `
apiVersion: sigil.dev/v1
kind: AuthorizationPolicy
metadata: { name: api }
spec:
  selector: { matchLabels: { app: api } }
  ingress:
    - action: allow
      from: [ { matchLabels: {} }, { cidrs: [ "127.0.0.0/8" ] } ]
    - action: deny
      http:
        paths: [ "/deny-by-cert/**" ]
        headers: [ { name: ${XFCC}, value: "${denyValue}" } ]
---
apiVersion: sigil.dev/v1
kind: PeerAuthentication
metadata: { name: api-peer-auth }
spec:
  selector: { matchLabels: { app: api } }
  mode: ${mode}
`;
}

const EGRESS_OPEN = `
apiVersion: sigil.dev/v1
kind: AuthorizationPolicy
metadata: { name: web }
spec:
  selector: { matchLabels: { app: web } }
  egress:
    - action: allow
`;

let intruder: TlsCredentials;
const INTRUDER = "intruder";

beforeAll(async () => {
  app = await startHeadRecorder();
  h2App = await startH2Recorder();
  grpcApp = await startGrpcRecorder();
  external = await startHeadRecorder();
  externalH2 = await startH2Recorder();
  const appPorts = [app.port, h2App.port, grpcApp.port];
  const protocols = { [app.port]: "http1", [h2App.port]: "h2", [grpcApp.port]: "h2" } as const;
  const plaintext = { inbound: { host: "127.0.0.1", port: 0, plaintextAppPort: app.port } };
  pair = await startPair({
    appPorts,
    protocols,
    externalTargets: [
      { host: "127.0.0.1", port: external.port },
      { host: "127.0.0.1", port: externalH2.port },
    ],
    policyA: EGRESS_OPEN,
    configB: plaintext,
  });
  sanitizeOnly = await startPair({
    appPorts,
    protocols,
    policyA: EGRESS_OPEN,
    configB: { ...plaintext, forwardClientCert: "sanitize" },
  });
  intruder = await pair.pki.credentials(INTRUDER, { app: "intruder" });
  const denyValue = expectedXfcc(pair.pki.spiffeId(INTRUDER), intruder);
  pair.b.policy.update({ policies: policySet(ingressPolicy("PERMISSIVE", denyValue)) });
  sanitizeOnly.b.policy.update({ policies: policySet(ingressPolicy("PERMISSIVE", denyValue)) });
});

afterAll(async () => {
  await pair?.close();
  await sanitizeOnly?.close();
  await Promise.all([app, h2App, grpcApp, external, externalH2].map((a) => a?.close()));
});

describe("the field's format", () => {
  it("defaults to sanitize_set and refuses anything but the two modes", () => {
    expect(parseSidecarConfig({}).forwardClientCert).toBe("sanitize_set");
    expect(() => parseSidecarConfig({ forwardClientCert: "forward_only" })).toThrow(/forwardClientCert/);
  });

  it("quotes a value holding a separator, and escapes quotes and backslashes inside it", () => {
    const der = Buffer.from("leaf");
    const hash = createHash("sha256").update(der).digest("hex");
    expect(forwardedClientCert("spiffe://td/a", der, "spiffe://td/ns=x;y,z")).toBe(
      `By=spiffe://td/a;Hash=${hash};URI="spiffe://td/ns=x;y,z"`,
    );
    expect(forwardedClientCert('spiffe://td/"q"\\', der, "spiffe://td/b")).toBe(
      `By="spiffe://td/\\"q\\"\\\\";Hash=${hash};URI=spiffe://td/b`,
    );
  });
});

describe("sanitize_set (default): B tells the application who called", () => {
  it("HTTP/1.1 through A: exactly one XFCC, built from A's certificate; the client's own never arrive", async () => {
    const path = "/h1/through-a";
    const res = await rawExchange(pair.outboundPort(app.port), forgedRequest(path));
    expect(res.data).toMatch(/^HTTP\/1\.1 200 /);
    const head = headFor(app, path);
    expect(fieldValues(head, XFCC)).toEqual([
      expectedXfcc(pair.pki.spiffeId("web"), pair.a.credentials.current()),
    ]);
    expect(head.toLowerCase()).not.toContain(FORGED);
  });

  it("HTTP/1.1 sent straight to B over mTLS: the forged fields are removed at B and the caller's own identity set", async () => {
    const path = "/h1/direct-mtls";
    const res = await meshExchange(intruder, forgedRequest(path));
    expect(res).toMatch(/^HTTP\/1\.1 200 /);
    const head = headFor(app, path);
    expect(fieldValues(head, XFCC)).toEqual([expectedXfcc(pair.pki.spiffeId(INTRUDER), intruder)]);
    expect(head.toLowerCase()).not.toContain(FORGED);
  });

  it("HTTP/1.1 straight to B with XFCC also named in Connection: removed all the same, ours set", async () => {
    const path = "/h1/named-in-connection";
    const res = await meshExchange(intruder, forgedRequest(path, true));
    expect(res).toMatch(/^HTTP\/1\.1 200 /);
    const head = headFor(app, path);
    expect(fieldValues(head, XFCC)).toEqual([expectedXfcc(pair.pki.spiffeId(INTRUDER), intruder)]);
    expect(fieldValues(head, "connection")).toEqual([]);
    expect(head.toLowerCase()).not.toContain(FORGED);
  });

  it("every request of a keep-alive connection gets the field, each forged one removed", async () => {
    const socket = await pair.meshConnect(intruder, "http1", app.port);
    socket.on("error", () => undefined);
    let data = "";
    socket.on("data", (c: Buffer) => (data += c.toString("latin1")));
    const closed = once(socket, "close");
    const keepAlive = (p: string): string =>
      `GET ${p} HTTP/1.1\r\nHost: api\r\nx-forwarded-client-cert: ${FORGED}\r\n\r\n`;
    socket.write(keepAlive("/h1/keep-1") + keepAlive("/h1/keep-2") + forgedRequest("/h1/keep-3", true));
    await closed;
    expect(data.match(/HTTP\/1\.1 200 /g)).toHaveLength(3);
    const expected = [expectedXfcc(pair.pki.spiffeId(INTRUDER), intruder)];
    for (const p of ["/h1/keep-1", "/h1/keep-2", "/h1/keep-3"]) {
      expect(fieldValues(headFor(app, p), XFCC)).toEqual(expected);
      expect(headFor(app, p).toLowerCase()).not.toContain(FORGED);
    }
  });

  it("an upgrade request passes its fields on, but not the client's XFCC nor a Connection option naming it", async () => {
    const path = "/h1/upgrade";
    const res = await meshExchange(
      intruder,
      `GET ${path} HTTP/1.1\r\nHost: api\r\nUpgrade: test\r\n${FORGED_FIELDS}` +
        `Connection: Upgrade, X-Forwarded-Client-Cert\r\nConnection: x-forwarded-client-cert\r\n\r\n`,
    );
    expect(res).toMatch(/^HTTP\/1\.1 101 /);
    const head = headFor(app, path);
    expect(fieldValues(head, XFCC)).toEqual([expectedXfcc(pair.pki.spiffeId(INTRUDER), intruder)]);
    expect(fieldValues(head, "connection")).toEqual(["Upgrade"]);
    expect(fieldValues(head, "upgrade")).toEqual(["test"]);
    expect(head.toLowerCase()).not.toContain(FORGED);
  });

  it("policy decides on the field the application receives, not on the one the client sent", async () => {
    const denied = await meshExchange(
      intruder,
      `GET /deny-by-cert/x HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n`,
    );
    expect(denied).toMatch(/^HTTP\/1\.1 403 /);
    // A plaintext client sending the very value a deny rule names is not denied by it: the
    // application never receives that value.
    const value = expectedXfcc(pair.pki.spiffeId(INTRUDER), intruder);
    const path = "/deny-by-cert/plaintext";
    const res = await rawExchange(
      pair.b.sidecar.inbound.port,
      `GET ${path} HTTP/1.1\r\nHost: api\r\n${XFCC}: ${value}\r\nConnection: close\r\n\r\n`,
    );
    expect(res.data).toMatch(/^HTTP\/1\.1 200 /);
    expect(fieldValues(headFor(app, path), XFCC)).toEqual([]);
    expect(app.heads.some((h) => h.startsWith("GET /deny-by-cert/x "))).toBe(false);
  });

  it("HTTP/2 through A: exactly one XFCC, built from A's certificate", async () => {
    const path = "/h2/through-a";
    const status = await withH2Session(
      () => http2.connect(`http://127.0.0.1:${pair.outboundPort(h2App.port)}`),
      (s) => h2Get(s, path, { [XFCC]: [`By=${FORGED}`, `URI=spiffe://sigil.local/${FORGED}`] }),
    );
    expect(status).toBe(200);
    expect(h2Values(h2App, path, XFCC)).toEqual([
      expectedXfcc(pair.pki.spiffeId("web"), pair.a.credentials.current()),
    ]);
  });

  it("HTTP/2 sent straight to B over mTLS: the forged fields are removed at B", async () => {
    const path = "/h2/direct-mtls";
    const socket = await pair.meshConnect(intruder, "h2", h2App.port);
    const status = await withH2Session(
      () => http2.connect("http://127.0.0.1", { createConnection: () => socket }),
      (s) => h2Get(s, path, { [XFCC]: [`By=${FORGED}`, `Hash=${FORGED}`] }),
    );
    expect(status).toBe(200);
    expect(h2Values(h2App, path, XFCC)).toEqual([expectedXfcc(pair.pki.spiffeId(INTRUDER), intruder)]);
  });

  it("gRPC through A: the service sees A's identity in its metadata, never the client's", async () => {
    const client = new EchoClient(
      `127.0.0.1:${pair.outboundPort(grpcApp.port)}`,
      grpc.credentials.createInsecure(),
    );
    try {
      const md = new grpc.Metadata();
      md.add(XFCC, `By=${FORGED}`);
      md.add(XFCC, `URI=spiffe://sigil.local/${FORGED}`);
      await new Promise<void>((resolve, reject) =>
        client.makeUnaryRequest(
          echoService.unary.path,
          (b: Buffer) => b,
          (b: Buffer) => b,
          Buffer.from("grpc-through-a"),
          md,
          (err) => (err ? reject(err) : resolve()),
        ),
      );
    } finally {
      client.close();
    }
    expect(grpcApp.seen.get("grpc-through-a")).toEqual([
      expectedXfcc(pair.pki.spiffeId("web"), pair.a.credentials.current()),
    ]);
  });
});

describe("callers without a verified certificate get no field", () => {
  for (const mode of ["PERMISSIVE", "DISABLE"] as const) {
    it(`a plaintext client under ${mode}: every forged field removed, none set`, async () => {
      const denyValue = expectedXfcc(pair.pki.spiffeId(INTRUDER), intruder);
      pair.b.policy.update({ policies: policySet(ingressPolicy(mode, denyValue)) });
      try {
        const path = `/h1/plaintext-${mode}`;
        const res = await rawExchange(pair.b.sidecar.inbound.port, forgedRequest(path));
        expect(res.data).toMatch(/^HTTP\/1\.1 200 /);
        const head = headFor(app, path);
        expect(fieldValues(head, XFCC)).toEqual([]);
        expect(head.toLowerCase()).not.toContain(FORGED);
        const flow = await pair.b.flows.next((r) => r.http?.path === path);
        expect(flow.encrypted).toBe(false);
      } finally {
        pair.b.policy.update({ policies: policySet(ingressPolicy("PERMISSIVE", denyValue)) });
      }
    });
  }
});

describe("sanitize: only removes", () => {
  it("HTTP/1.1 over mTLS: no field reaches the application", async () => {
    const path = "/sanitize/h1";
    const res = await rawExchange(sanitizeOnly.outboundPort(app.port), forgedRequest(path));
    expect(res.data).toMatch(/^HTTP\/1\.1 200 /);
    const head = headFor(app, path);
    expect(fieldValues(head, XFCC)).toEqual([]);
    expect(head.toLowerCase()).not.toContain(FORGED);
    const flow = await sanitizeOnly.b.flows.next((r) => r.http?.path === path);
    expect(flow).toMatchObject({ encrypted: true, verdict: "allow" });
  });

  it("HTTP/2 over mTLS: no field reaches the application", async () => {
    const path = "/sanitize/h2";
    const status = await withH2Session(
      () => http2.connect(`http://127.0.0.1:${sanitizeOnly.outboundPort(h2App.port)}`),
      (s) => h2Get(s, path, { [XFCC]: `By=${FORGED}` }),
    );
    expect(status).toBe(200);
    expect(h2Values(h2App, path, XFCC)).toEqual([]);
  });
});

describe("egress: the workload cannot set the field towards an upstream", () => {
  it("HTTP/1.1 to a destination outside the mesh", async () => {
    const path = "/egress/h1";
    const res = await rawExchange(pair.externalPort(0), forgedRequest(path));
    expect(res.data).toMatch(/^HTTP\/1\.1 200 /);
    const head = headFor(external, path);
    expect(fieldValues(head, XFCC)).toEqual([]);
    expect(head.toLowerCase()).not.toContain(FORGED);
  });

  it("HTTP/2 to a destination outside the mesh", async () => {
    const path = "/egress/h2";
    const status = await withH2Session(
      () => http2.connect(`http://127.0.0.1:${pair.externalPort(1)}`),
      (s) => h2Get(s, path, { [XFCC]: [`By=${FORGED}`, `URI=${FORGED}`] }),
    );
    expect(status).toBe(200);
    expect(h2Values(externalH2, path, XFCC)).toEqual([]);
  });
});
