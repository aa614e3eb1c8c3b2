import { spawn } from "node:child_process";
import { webcrypto } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { x509 } from "../../core/svid/x509.ts";
import { PING_SERVICE } from "../support/ping-service.ts";

const TSX = join(import.meta.dirname, "../../node_modules/.bin/tsx");
const CHILD = join(import.meta.dirname, "../support/control-plane-dial.ts");
const ALG = { name: "ECDSA", namedCurve: "P-256" } as const;
const SIGN = { name: "ECDSA", hash: "SHA-256" } as const;

interface Issuer {
  readonly name: string;
  readonly keys: webcrypto.CryptoKeyPair;
  readonly pem: string;
}

type SanEntry = { type: "url" | "dns" | "ip"; value: string };

let dir: string;
const servers: grpc.Server[] = [];
let serial = 1;

const newKeys = () =>
  webcrypto.subtle.generateKey(ALG, true, ["sign", "verify"]) as Promise<webcrypto.CryptoKeyPair>;

async function keyPem(keys: webcrypto.CryptoKeyPair): Promise<string> {
  return x509.PemConverter.encode(await webcrypto.subtle.exportKey("pkcs8", keys.privateKey), "PRIVATE KEY");
}

async function newRoot(name: string): Promise<Issuer> {
  const keys = await newKeys();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: (serial++).toString(16).padStart(2, "0"),
    name,
    notBefore: new Date(Date.now() - 60_000),
    notAfter: new Date(Date.now() + 3_600_000),
    keys,
    signingAlgorithm: SIGN,
    extensions: [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign, true),
    ],
  });
  return { name, keys, pem: cert.toString("pem") };
}

async function issue(root: Issuer, san: SanEntry[]): Promise<{ certPem: string; keyPem: string }> {
  const keys = await newKeys();
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: (serial++).toString(16).padStart(2, "0"),
    subject: "O=Sigil",
    issuer: root.name,
    notBefore: new Date(Date.now() - 60_000),
    notAfter: new Date(Date.now() + 3_600_000),
    publicKey: keys.publicKey,
    signingKey: root.keys.privateKey,
    signingAlgorithm: SIGN,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([
        x509.ExtendedKeyUsage.serverAuth,
        x509.ExtendedKeyUsage.clientAuth,
      ]),
      new x509.SubjectAlternativeNameExtension(san),
    ],
  });
  return { certPem: cert.toString("pem"), keyPem: await keyPem(keys) };
}

/** A TLS gRPC server on loopback answering Ping, presenting `served`; returns `127.0.0.1:<port>`. */
async function serve(served: { certPem: string; keyPem: string }): Promise<string> {
  const server = new grpc.Server();
  server.addService(PING_SERVICE, {
    Ping: (_call: unknown, callback: grpc.sendUnaryData<Buffer>) => callback(null, Buffer.from("pong")),
  });
  servers.push(server);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(
      "127.0.0.1:0",
      grpc.ServerCredentials.createSsl(
        null,
        [{ private_key: Buffer.from(served.keyPem), cert_chain: Buffer.from(served.certPem) }],
        false,
      ),
      (err, p) => (err ? reject(err) : resolve(p)),
    ),
  );
  return `127.0.0.1:${port}`;
}

interface DialResult {
  readonly target: string;
  readonly kind: "bootstrap" | "svid";
  readonly ok: boolean;
  readonly error: string | null;
}

/** Runs the dialing child to completion (bounded), returning its results and stderr. */
function dial(args: string[]): Promise<{ results: DialResult[]; stderr: string; code: number | null }> {
  return new Promise((resolve, reject) => {
    const child = spawn(TSX, [CHILD, ...args], { stdio: "pipe" });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`dialing child did not finish: ${stderr}`));
    }, 60_000);
    child.on("close", (code) => {
      clearTimeout(timer);
      const results = stdout
        .split("\n")
        .filter((l) => l.trim() !== "")
        .map((l) => JSON.parse(l) as DialResult);
      resolve({ results, stderr, code });
    });
  });
}

let targets: { spiffe: string; ip: string; otherName: string; otherCa: string };
let clientFiles: { ca: string; cert: string; key: string };

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "sg-cpdial-"));
  const root = await newRoot("CN=Dial test root, O=Sigil");
  const stranger = await newRoot("CN=Stranger root, O=Sigil");
  const client = await issue(root, [{ type: "url", value: "spiffe://sigil.local/workload/dialer" }]);
  clientFiles = { ca: join(dir, "ca.pem"), cert: join(dir, "client.pem"), key: join(dir, "client.key") };
  await writeFile(clientFiles.ca, root.pem);
  await writeFile(clientFiles.cert, client.certPem);
  await writeFile(clientFiles.key, client.keyPem);
  targets = {
    // The control plane's SPIFFE ID and no IP SAN: accepted by the ID.
    spiffe: await serve(
      await issue(root, [{ type: "url", value: "spiffe://sigil.local/sigil/controlplane" }]),
    ),
    // Only the dialed address as an IP SAN: accepted by the address.
    ip: await serve(await issue(root, [{ type: "ip", value: "127.0.0.1" }])),
    // Trusted CA, but naming another host and another SPIFFE ID.
    otherName: await serve(
      await issue(root, [
        { type: "dns", value: "other.test" },
        { type: "url", value: "spiffe://sigil.local/workload/api" },
      ]),
    ),
    // The right SPIFFE ID and address, from a CA the sidecar does not trust.
    otherCa: await serve(
      await issue(stranger, [
        { type: "url", value: "spiffe://sigil.local/sigil/controlplane" },
        { type: "ip", value: "127.0.0.1" },
      ]),
    ),
  };
}, 30_000);

afterAll(async () => {
  for (const s of servers) s.forceShutdown();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe("a sidecar dialing the control plane by IP address", () => {
  it("sends no IP as TLS server name (no DEP0123) and still verifies the control plane's name or SPIFFE ID", async () => {
    const { results, stderr, code } = await dial([
      "sigil.local",
      clientFiles.ca,
      clientFiles.cert,
      clientFiles.key,
      targets.spiffe,
      targets.ip,
      targets.otherName,
      targets.otherCa,
    ]);
    expect(code).toBe(0);
    expect(stderr).not.toMatch(/DEP0123|TLS ServerName to an IP address/);
    const outcome = (target: string) =>
      results.filter((r) => r.target === target).map((r) => [r.kind, r.ok, r.error ?? ""]);
    for (const ok of [targets.spiffe, targets.ip]) {
      expect(outcome(ok)).toEqual([
        ["bootstrap", true, ""],
        ["svid", true, ""],
      ]);
    }
    for (const [kind, ok, error] of outcome(targets.otherName)) {
      expect([kind, ok]).toEqual([kind, false]);
      expect(error).toMatch(
        /control plane certificate names neither 127\.0\.0\.1 nor spiffe:\/\/sigil\.local\/sigil\/controlplane/,
      );
    }
    for (const [, ok, error] of outcome(targets.otherCa)) {
      expect(ok).toBe(false);
      expect(error).toMatch(/certificate/i);
    }
    expect(results).toHaveLength(8);
  });
});
