/**
 * The SPIFFE Workload API served by a real `sigil sidecar` agent against a real control plane, on a
 * Unix socket, called by a client built from the published workload.proto running as the workload's
 * user (uid 65534) in its own process. What it hands out is checked by the tools a workload would use:
 * `openssl verify` of the X.509-SVID against the bundle, `openssl pkey` of the PKCS#8 key, jose on
 * the JWT-SVID against the JWKS. Refusals: no security header, a uid that is not the workload's, the
 * sidecar's own uid, and ValidateJWTSVID of a forged, an expired and a wrong-audience token. With a
 * 6 s SVID, the X.509 stream sends the renewed SVID before the previous one expires; a CA rotation
 * reaches both bundle streams. Each wait is on the stream's next message, bounded.
 */
import { execFile } from "node:child_process";
import { X509Certificate, createPrivateKey, generateKeyPairSync } from "node:crypto";
import { chmod, mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import * as grpc from "@grpc/grpc-js";
import { SignJWT, createLocalJWKSet, decodeProtectedHeader, jwtVerify } from "jose";
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { controlPlaneSpiffeId } from "../../controlplane/ca/authority.ts";
import { startAgent } from "../../sidecar/agent/agent.ts";
import type { Agent } from "../../sidecar/agent/agent.ts";
import { parseAgentOptions } from "../../sidecar/agent/options.ts";
import { IdentityClient, IdentityRequestError } from "../../sidecar/identity/identity-client.ts";
import { apiIngressPolicy } from "../support/api-ingress.ts";
import { loopbackAgentInput, startTestControlPlane } from "../support/control-plane.ts";
import type { TestControlPlane } from "../support/control-plane.ts";
import { WorkloadApiClientProcess, codeOf, messageOf } from "../support/workload-api-client.ts";
import type { WorkloadStream } from "../support/workload-api-client.ts";

const run = promisify(execFile);
const WORKLOAD_UID = 65534;
const OTHER_UID = 65533;
const TD = "spiffe://sigil.local";
const SVID_TTL_SECONDS = 6;

let controlPlane: TestControlPlane;
let agent: Agent;
let dir: string;
let socket: string;
let workload: WorkloadApiClientProcess;

/** Splits concatenated DER certificates (SEQUENCE with a definite length each). */
function splitDer(der: Buffer): X509Certificate[] {
  const certs: X509Certificate[] = [];
  let at = 0;
  while (at < der.length) {
    const first = der[at + 1] as number;
    const lengthBytes = first & 0x80 ? first & 0x7f : 0;
    let length = lengthBytes ? 0 : first;
    for (let i = 0; i < lengthBytes; i++) length = length * 256 + (der[at + 2 + i] as number);
    const end = at + 2 + lengthBytes + length;
    certs.push(new X509Certificate(der.subarray(at, end)));
    at = end;
  }
  return certs;
}

const bytes = (value: unknown): Buffer => Buffer.from(value as string, "base64");

function firstSvid(message: Record<string, unknown>): Record<string, unknown> {
  const svids = message.svids as Record<string, unknown>[];
  expect(svids).toHaveLength(1);
  return svids[0] as Record<string, unknown>;
}

beforeAll(async () => {
  controlPlane = await startTestControlPlane("sigil-workload-api-", {
    "api.yaml": apiIngressPolicy({ methods: ["GET"], paths: ["/"] }),
  });
  dir = await mkdtemp(join(tmpdir(), "sigil-workload-api-"));
  // The workload's user must reach the socket; only the sidecar's may write the directory.
  await chmod(dir, 0o755);
  socket = join(dir, "agent.sock");
  const { token } = await controlPlane.cp.identity.tokens.create({
    name: "api",
    labels: { app: "api" },
    ttlSeconds: 600,
  });
  agent = await startAgent(
    parseAgentOptions(
      loopbackAgentInput(controlPlane, token, "api", {
        workloadApiSocket: socket,
        workloadApiUid: [WORKLOAD_UID],
        svidTtlSeconds: SVID_TTL_SECONDS,
      }),
    ),
    { logger: pino({ level: "silent" }), startTimeoutMs: 30_000 },
  );
  workload = WorkloadApiClientProcess.start(socket, WORKLOAD_UID);
}, 60_000);

afterAll(async () => {
  await workload?.close();
  await agent?.close();
  await controlPlane?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe("SPIFFE Workload API on the sidecar", () => {
  it("hands the workload's user its X.509-SVID, PKCS#8 key and bundle, which openssl verifies", async () => {
    expect(((await stat(socket)).mode & 0o777).toString(8)).toBe("666");
    const stream = workload.stream("FetchX509SVID");
    const svid = firstSvid(messageOf(await stream.next("first message")));
    const fetchedAt = Math.ceil(Date.now() / 1000);
    stream.cancel();
    expect(svid.spiffe_id).toBe(agent.spiffeId);
    const chain = splitDer(bytes(svid.x509_svid));
    const roots = splitDer(bytes(svid.bundle));
    expect(roots.map((r) => r.fingerprint256)).toEqual(
      controlPlane.cp.identity.ca.bundle().x509Authorities.map((r) => r.fingerprint256),
    );
    await writeFile(join(dir, "leaf.pem"), chain.map((c) => c.toString()).join(""));
    await writeFile(join(dir, "bundle.pem"), roots.map((c) => c.toString()).join(""));
    await writeFile(join(dir, "key.der"), bytes(svid.x509_svid_key));
    // The verdict is taken at the moment the SVID was fetched, not whenever openssl runs.
    const verified = await run("openssl", [
      "verify",
      "-attime",
      String(fetchedAt),
      "-CAfile",
      join(dir, "bundle.pem"),
      join(dir, "leaf.pem"),
    ]);
    expect(verified.stdout).toContain("leaf.pem: OK");
    createPrivateKey({ key: bytes(svid.x509_svid_key), format: "der", type: "pkcs8" });
    const keyPub = await run("openssl", ["pkey", "-inform", "DER", "-in", join(dir, "key.der"), "-pubout"]);
    const certPub = await run("openssl", ["x509", "-in", join(dir, "leaf.pem"), "-noout", "-pubkey"]);
    expect(keyPub.stdout).toBe(certPub.stdout);
  });

  it("refuses a request without the security header with INVALID_ARGUMENT", async () => {
    const stream = workload.stream("FetchX509SVID", false);
    expect(codeOf(await stream.next("refusal"))).toBe(grpc.status.INVALID_ARGUMENT);
    const jwt = await workload.call("FetchJWTSVID", { audience: ["api.example"] }, false);
    expect(codeOf(jwt)).toBe(grpc.status.INVALID_ARGUMENT);
  });

  it("refuses callers that are not the workload's user, the sidecar's own included", async () => {
    const other = WorkloadApiClientProcess.start(socket, OTHER_UID);
    try {
      const stream = other.stream("FetchX509SVID");
      const refused = await stream.next("refusal");
      expect(codeOf(refused)).toBe(grpc.status.PERMISSION_DENIED);
      expect(JSON.stringify(refused)).toContain(`uid ${OTHER_UID}`);
      expect(codeOf(await other.call("FetchJWTSVID", { audience: ["api.example"] }))).toBe(
        grpc.status.PERMISSION_DENIED,
      );
      expect(codeOf(await other.call("ValidateJWTSVID", { audience: "a", svid: "b" }))).toBe(
        grpc.status.PERMISSION_DENIED,
      );
    } finally {
      await other.close();
    }
    // This process runs as the sidecar's user.
    const own = WorkloadApiClientProcess.start(socket, process.getuid?.() ?? 0);
    try {
      const refused = await own.stream("FetchX509Bundles").next("refusal");
      expect(codeOf(refused)).toBe(grpc.status.PERMISSION_DENIED);
      expect(JSON.stringify(refused)).toContain("sidecar's own");
    } finally {
      await own.close();
    }
  });

  it("signs JWT-SVIDs through the control plane that jose verifies against the JWKS, and validates them", async () => {
    const fetched = messageOf(await workload.call("FetchJWTSVID", { audience: ["api.example"] }));
    const { svid: token, spiffe_id } = (fetched.svids as Record<string, string>[])[0] as Record<
      string,
      string
    >;
    expect(spiffe_id).toBe(agent.spiffeId);
    const bundles = workload.stream("FetchJWTBundles");
    const jwks = JSON.parse(
      bytes((messageOf(await bundles.next("JWKS")).bundles as Record<string, string>)[TD]).toString(),
    ) as { keys: Record<string, string>[] };
    bundles.cancel();
    const { payload } = await jwtVerify(token as string, createLocalJWKSet(jwks), {
      audience: "api.example",
    });
    expect(payload.sub).toBe(agent.spiffeId);
    expect((payload.exp as number) - (payload.iat as number)).toBeLessThanOrEqual(300);

    const validated = messageOf(
      await workload.call("ValidateJWTSVID", { audience: "api.example", svid: token }),
    );
    expect(validated.spiffe_id).toBe(agent.spiffeId);
    expect(validated.claims).toMatchObject({ fields: { sub: { stringValue: agent.spiffeId } } });

    expect(codeOf(await workload.call("FetchJWTSVID", { audience: [] }))).toBe(grpc.status.INVALID_ARGUMENT);
    const otherId = await workload.call("FetchJWTSVID", {
      audience: ["x"],
      spiffe_id: `${TD}/workload/other`,
    });
    expect(codeOf(otherId)).toBe(grpc.status.PERMISSION_DENIED);
  });

  it("refuses to validate a forged, an expired and a wrong-audience JWT-SVID", async () => {
    const fetched = messageOf(await workload.call("FetchJWTSVID", { audience: ["api.example"] }));
    const token = (fetched.svids as Record<string, string>[])[0]?.svid as string;
    const wrongAudience = await workload.call("ValidateJWTSVID", { audience: "db.example", svid: token });
    expect(codeOf(wrongAudience)).toBe(grpc.status.INVALID_ARGUMENT);

    // Same header and claims, signed by a key that is not the CA's.
    const { privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
    const forged = await new SignJWT({ jti: "forged" })
      .setProtectedHeader({ alg: "ES256", kid: decodeProtectedHeader(token).kid as string, typ: "JWT" })
      .setSubject(agent.spiffeId)
      .setAudience(["api.example"])
      .setIssuedAt()
      .setExpirationTime("5m")
      .sign(privateKey);
    const refusedForged = await workload.call("ValidateJWTSVID", { audience: "api.example", svid: forged });
    expect(codeOf(refusedForged)).toBe(grpc.status.INVALID_ARGUMENT);
    expect(JSON.stringify(refusedForged)).toContain("signature");

    // Signed by the CA itself, two hours ago for one minute.
    const expired = await controlPlane.cp.identity.ca.issueWorkloadJwtSvid({
      spiffeId: agent.spiffeId,
      audience: ["api.example"],
      ttlSeconds: 60,
      now: new Date(Date.now() - 2 * 3600_000),
    });
    const refusedExpired = await workload.call("ValidateJWTSVID", {
      audience: "api.example",
      svid: expired.token,
    });
    expect(codeOf(refusedExpired)).toBe(grpc.status.INVALID_ARGUMENT);
    expect(JSON.stringify(refusedExpired)).toContain('\\"exp\\" claim');
  });

  it("signs JWT-SVIDs only for a caller that presents a workload SVID", async () => {
    const client = new IdentityClient({
      address: controlPlane.grpcTarget,
      caPem: controlPlane.caPem,
      serverSpiffeId: controlPlaneSpiffeId("sigil.local"),
    });
    try {
      const refused = await client
        .signJwtSvid({ audience: ["api.example"], ttlSeconds: 0 })
        .catch((e: unknown) => e);
      expect(refused).toBeInstanceOf(IdentityRequestError);
      expect((refused as IdentityRequestError).code).toBe(grpc.status.UNAUTHENTICATED);
    } finally {
      client.close();
    }
  });

  it("streams the renewed X.509-SVID before the previous one expires", async () => {
    const stream = workload.stream("FetchX509SVID");
    const [before] = splitDer(bytes(firstSvid(messageOf(await stream.next("first message"))).x509_svid));
    const next = await stream.next("renewed SVID", SVID_TTL_SECONDS * 1000 + 10_000);
    const receivedAt = Date.now();
    stream.cancel();
    const [after] = splitDer(bytes(firstSvid(messageOf(next)).x509_svid));
    expect(after?.serialNumber).not.toBe(before?.serialNumber);
    expect(receivedAt).toBeLessThan(new Date(before?.validTo as string).getTime());
    expect(new Date(after?.validTo as string).getTime()).toBeGreaterThan(
      new Date(before?.validTo as string).getTime(),
    );
  });

  it("streams both bundles again when the CA rotates", async () => {
    const x509 = workload.stream("FetchX509Bundles");
    const jwt = workload.stream("FetchJWTBundles");
    const rootsOf = (reply: Record<string, unknown>): X509Certificate[] =>
      splitDer(bytes((reply.bundles as Record<string, string>)[TD]));
    const keysOf = (reply: Record<string, unknown>): unknown[] =>
      (JSON.parse(bytes((reply.bundles as Record<string, string>)[TD]).toString()) as { keys: unknown[] })
        .keys;
    const rootsBefore = rootsOf(messageOf(await x509.next("first bundle"))).length;
    const keysBefore = keysOf(messageOf(await jwt.next("first JWKS"))).length;
    await controlPlane.cp.identity.ca.rotate({ activateInSeconds: 3600 });
    const awaitNext = async (stream: WorkloadStream, what: string) =>
      messageOf(await stream.next(what, 20_000));
    expect(rootsOf(await awaitNext(x509, "rotated bundle"))).toHaveLength(rootsBefore + 1);
    expect(keysOf(await awaitNext(jwt, "rotated JWKS"))).toHaveLength(keysBefore + 1);
    x509.cancel();
    jwt.cancel();
  });
});
