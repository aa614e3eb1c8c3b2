/**
 * Identity signing benchmark.
 *   1. CA signings per second: `CertificateAuthority.issueSvid` alone, sequential.
 *   2. CSR round trip over real gRPC (TLS on loopback): a sidecar-side client sends a CSR with a
 *      renewal proof to `sigil.v1.IdentityService/SignSvid`; the control plane verifies the proof,
 *      checks the CSR, signs the X.509-SVID and the JWT-SVID and records the issuance on disk.
 *      Latency percentiles sequentially, then throughput with N concurrent requests.
 * CSRs and proofs are made before timing starts: the figures are the control plane's work plus the
 * gRPC round trip, not the client's key generation.
 *
 * Usage: node --import tsx bench/identity/sign-bench.ts [--signings 2000] [--requests 1000] [--concurrency 16]
 */
import { mkdtemp, rm } from "node:fs/promises";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";
import * as grpc from "@grpc/grpc-js";
import { controlPlaneSpiffeId } from "../../controlplane/ca/authority.ts";
import {
  IdentityServiceDefinition,
  identityServiceHandlers,
} from "../../controlplane/identity/grpc-service.ts";
import { openIdentityPlane } from "../../controlplane/identity/plane.ts";
import { bundleRootsPem } from "../../core/svid/bundle.ts";
import type { WireSignSvidRequest } from "../../core/svid/wire.ts";
import { IdentityClient } from "../../sidecar/identity/identity-client.ts";
import { createCsr, generateWorkloadKey, signWithKey } from "../../sidecar/identity/workload-key.ts";

const { values } = parseArgs({
  options: {
    signings: { type: "string", default: "2000" },
    requests: { type: "string", default: "1000" },
    concurrency: { type: "string", default: "16" },
  },
});
const SIGNINGS = Number(values.signings);
const REQUESTS = Number(values.requests);
const CONCURRENCY = Number(values.concurrency);

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] as number;
}

const dataDir = await mkdtemp(join(tmpdir(), "sigil-bench-id-"));
const plane = await openIdentityPlane({ dataDir });
const server = new grpc.Server();
try {
  // 1. Raw CA signing.
  const key = await generateWorkloadKey();
  const labels = [
    { key: "app", value: "bench", provenance: "join-token" as const },
    { key: "proc.user", value: "bench", provenance: "proc" as const },
  ];
  for (let i = 0; i < 50; i++) {
    await plane.ca.issueSvid({
      publicKey: key.keys.publicKey,
      spiffeId: "spiffe://sigil.local/workload/bench",
      labels,
      ttlSeconds: 3600,
    });
  }
  let t0 = performance.now();
  for (let i = 0; i < SIGNINGS; i++) {
    await plane.ca.issueSvid({
      publicKey: key.keys.publicKey,
      spiffeId: "spiffe://sigil.local/workload/bench",
      labels,
      ttlSeconds: 3600,
    });
  }
  const signSeconds = (performance.now() - t0) / 1000;

  // 2. Over gRPC.
  const serving = await plane.ca.issueServingCertificate({
    dnsNames: ["localhost"],
    ipAddresses: ["127.0.0.1"],
  });
  server.addService(IdentityServiceDefinition, identityServiceHandlers({ issuer: plane.issuer }));
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(
      "127.0.0.1:0",
      grpc.ServerCredentials.createSsl(
        null,
        [{ private_key: Buffer.from(serving.keyPem), cert_chain: Buffer.from(serving.certPem) }],
        false,
      ),
      (err, p) => (err ? reject(err) : resolve(p)),
    ),
  );
  const client = new IdentityClient({
    address: `127.0.0.1:${port}`,
    caPem: bundleRootsPem(plane.bundle()),
    serverSpiffeId: controlPlaneSpiffeId(plane.ca.trustDomain),
  });
  const { token } = await plane.tokens.create({ name: "bench", labels: { app: "bench" }, ttlSeconds: 600 });
  const firstKey = await generateWorkloadKey();
  const first = await client.signSvid({
    csr: await createCsr(firstKey),
    attestation: { proof: "joinToken", joinToken: { token }, process: null, metadata: null },
    jwtAudiences: [],
    ttlSeconds: 0,
  });
  const total = REQUESTS * 2 + 50;
  const requests: WireSignSvidRequest[] = [];
  for (let i = 0; i < total; i++) {
    const csr = await createCsr(await generateWorkloadKey());
    requests.push({
      csr,
      attestation: {
        proof: "renewal",
        renewal: { certChain: first.certChain, csrSignature: signWithKey(firstKey, csr) },
        process: null,
        metadata: null,
      },
      jwtAudiences: [],
      ttlSeconds: 0,
    });
  }
  let next = 0;
  for (let i = 0; i < 50; i++) await client.signSvid(requests[next++] as WireSignSvidRequest);
  const latencies: number[] = [];
  for (let i = 0; i < REQUESTS; i++) {
    const start = performance.now();
    await client.signSvid(requests[next++] as WireSignSvidRequest);
    latencies.push(performance.now() - start);
  }
  latencies.sort((a, b) => a - b);
  t0 = performance.now();
  const end = next + REQUESTS;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < end) await client.signSvid(requests[next++] as WireSignSvidRequest);
    }),
  );
  const concurrentSeconds = (performance.now() - t0) / 1000;
  client.close();

  const result = {
    machine: `${cpus().length} × ${cpus()[0]?.model ?? "cpu"}, Node ${process.version}`,
    loadAverage1m: Number(loadavg()[0]?.toFixed(2)),
    caSigningsPerSecond: Math.round(SIGNINGS / signSeconds),
    grpcSequential: {
      requests: REQUESTS,
      p50ms: Number(percentile(latencies, 50).toFixed(2)),
      p95ms: Number(percentile(latencies, 95).toFixed(2)),
      p99ms: Number(percentile(latencies, 99).toFixed(2)),
      perSecond: Math.round(REQUESTS / (latencies.reduce((a, b) => a + b, 0) / 1000)),
    },
    grpcConcurrent: {
      requests: REQUESTS,
      concurrency: CONCURRENCY,
      perSecond: Math.round(REQUESTS / concurrentSeconds),
    },
  };
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
} finally {
  server.forceShutdown();
  plane.close();
  await rm(dataDir, { recursive: true, force: true });
}
