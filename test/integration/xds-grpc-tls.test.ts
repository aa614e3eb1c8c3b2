import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  startGrpcServer,
  type GrpcTlsOptions,
  type RunningGrpcServer,
} from "../../controlplane/grpc-server.ts";
import { createSelfSignedServingCert, type ServingCert } from "../support/serving-cert.ts";
import { XdsClient } from "../../xds/client.ts";
import { defaultTypeRegistry } from "../../xds/registry.ts";
import { AdsServer, type StreamPeer } from "../../xds/server.ts";
import { SnapshotCache } from "../../xds/snapshot.ts";
import { TRUST_BUNDLE } from "../../xds/type-urls.ts";
import { nextEvent } from "./xds-harness.ts";

const run = promisify(execFile);
let dir: string;
let serving: ServingCert;
const pki: Record<string, string> = {};

/** A CA and a client certificate it signed (clientAuth), plus one from an unrelated CA. */
async function makePki(): Promise<void> {
  const ossl = (...args: string[]) => run("openssl", args, { cwd: dir });
  for (const ca of ["ca", "rogue-ca"]) {
    await ossl(
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:P-256",
      "-nodes",
      "-days",
      "1",
      "-subj",
      `/CN=${ca}`,
      "-addext",
      "basicConstraints=critical,CA:TRUE",
      "-addext",
      "keyUsage=critical,keyCertSign",
      "-keyout",
      `${ca}.key`,
      "-out",
      `${ca}.crt`,
    );
  }
  for (const [leaf, ca] of [
    ["client", "ca"],
    ["rogue", "rogue-ca"],
  ] as const) {
    await ossl(
      "req",
      "-new",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:P-256",
      "-nodes",
      "-subj",
      `/CN=${leaf}`,
      "-keyout",
      `${leaf}.key`,
      "-out",
      `${leaf}.csr`,
    );
    await writeFile(
      join(dir, `${leaf}.ext`),
      "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\nsubjectAltName=URI:spiffe://sigil.local/workload/" +
        leaf +
        "\n",
    );
    await ossl(
      "x509",
      "-req",
      "-in",
      `${leaf}.csr`,
      "-CA",
      `${ca}.crt`,
      "-CAkey",
      `${ca}.key`,
      "-CAcreateserial",
      "-days",
      "1",
      "-extfile",
      `${leaf}.ext`,
      "-out",
      `${leaf}.crt`,
    );
  }
  for (const f of ["ca.crt", "client.key", "client.crt", "rogue.key", "rogue.crt"])
    pki[f] = await readFile(join(dir, f), "utf8");
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "sg-tls-"));
  serving = await createSelfSignedServingCert(["localhost"]);
  await makePki();
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function adsOn(tls: GrpcTlsOptions) {
  const seen: StreamPeer[] = [];
  const ads = new AdsServer({
    cache: new SnapshotCache(),
    registry: defaultTypeRegistry(),
    authorize: (node, peer) => {
      seen.push(peer);
      return node.id;
    },
  });
  const server = await startGrpcServer({ host: "127.0.0.1", port: 0, tls });
  server.addService(ads.definition, ads.implementation);
  return { ads, server, seen };
}

/** Opens an ADS stream with the given client credentials; resolves "open" or the failure status. */
async function attempt(
  server: RunningGrpcServer,
  ads: AdsServer,
  serverCa: string,
  client?: "client" | "rogue",
) {
  const creds = grpc.credentials.createSsl(
    Buffer.from(serverCa),
    client ? Buffer.from(pki[`${client}.key`] ?? "") : null,
    client ? Buffer.from(pki[`${client}.crt`] ?? "") : null,
  );
  const c = new XdsClient({
    target: `127.0.0.1:${server.port}`,
    credentials: creds,
    channelOptions: { "grpc.ssl_target_name_override": "localhost", "grpc.use_local_subchannel_pool": 1 },
    node: { id: `n-${Math.random().toString(36).slice(2)}` },
    protocol: "sotw",
    registry: defaultTypeRegistry(),
    backoff: { initialMs: 60_000, maxMs: 60_000, multiplier: 1, jitter: 0 },
  });
  c.subscribe(TRUST_BUNDLE);
  const outcome = Promise.race([
    nextEvent(ads, "stream-open").then(() => "open"),
    nextEvent<{ code: number }>(c, "disconnected").then((d) => `failed ${grpc.status[d.code]}`),
  ]);
  c.start();
  try {
    return await outcome;
  } finally {
    c.close();
  }
}

describe("control plane gRPC TLS", () => {
  it("require: only clients with a certificate from the client CA get through, and the authorizer sees it", async () => {
    const { ads, server, seen } = await adsOn({
      ...serving,
      clientCaPem: pki["ca.crt"],
      clientCerts: "require",
    });
    try {
      expect(await attempt(server, ads, serving.certPem, "client")).toBe("open");
      expect(seen[0]?.certificate?.subject?.CN).toBe("client");
      expect(seen[0]?.transportSecurity).toBe("ssl");
      expect(await attempt(server, ads, serving.certPem)).toBe("failed UNAVAILABLE");
      expect(await attempt(server, ads, serving.certPem, "rogue")).toBe("failed UNAVAILABLE");
      expect(seen).toHaveLength(1);
    } finally {
      await server.close(0);
    }
  });

  it("request: a client without a certificate connects, and the authorizer is told there is none", async () => {
    const { ads, server, seen } = await adsOn({
      ...serving,
      clientCaPem: pki["ca.crt"],
      clientCerts: "request",
    });
    try {
      expect(await attempt(server, ads, serving.certPem)).toBe("open");
      expect(seen[0]?.certificate).toBeUndefined();
      expect(await attempt(server, ads, serving.certPem, "client")).toBe("open");
      expect(seen[1]?.certificate?.subject?.CN).toBe("client");
    } finally {
      await server.close(0);
    }
  });

  it("rotates the serving certificate without a restart", async () => {
    const { ads, server } = await adsOn(serving);
    try {
      expect(await attempt(server, ads, serving.certPem)).toBe("open");
      const next = await createSelfSignedServingCert(["localhost"]);
      server.updateTls(next);
      expect(await attempt(server, ads, next.certPem)).toBe("open");
      expect(await attempt(server, ads, serving.certPem)).toBe("failed UNAVAILABLE");
    } finally {
      await server.close(0);
    }
  });

  it("refuses a client certificate mode without client roots", async () => {
    await expect(
      startGrpcServer({ host: "127.0.0.1", port: 0, tls: { ...serving, clientCerts: "require" } }),
    ).rejects.toThrow(/needs clientCaPem/);
  });
});
