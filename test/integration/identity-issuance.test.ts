import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { once } from "node:events";
import * as grpc from "@grpc/grpc-js";
import { SignJWT, exportJWK, generateKeyPair } from "jose";
import type { JWK } from "jose";
import type { webcrypto } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseBundle } from "../../core/svid/bundle.ts";
import { verifyJwtSvid } from "../../core/svid/jwt.ts";
import { labelsExtensionDer } from "../../core/svid/labels-extension.ts";
import { verifySvid } from "../../core/svid/verify.ts";
import type { WireSignSvidRequest } from "../../core/svid/wire.ts";
import { x509 } from "../../core/svid/x509.ts";
import type { IdentityClient } from "../../sidecar/identity/identity-client.ts";
import { RotationManager } from "../../sidecar/identity/rotation.ts";
import { collectProcessFacts } from "../../sidecar/identity/workload-facts.ts";
import { createCsr, generateWorkloadKey, signWithKey } from "../../sidecar/identity/workload-key.ts";
import type { IdentityHarness } from "../support/identity-harness.ts";
import { refusal, startIdentityHarness } from "../support/identity-harness.ts";

const ISSUER = "https://kubernetes.default.svc.cluster.local";
let h: IdentityHarness;
let client: IdentityClient;
let clusterKey: webcrypto.CryptoKey;

beforeAll(async () => {
  const pair = await generateKeyPair("ES256");
  clusterKey = pair.privateKey as webcrypto.CryptoKey;
  const jwk: JWK = { ...(await exportJWK(pair.publicKey)), kid: "cluster-1", alg: "ES256", use: "sig" };
  h = await startIdentityHarness({
    kubernetes: { issuer: ISSUER, audiences: ["sigil"], jwks: { keys: [jwk] } },
  });
  client = h.newClient();
});
afterAll(async () => {
  await h?.close();
});

async function joinRequest(token: string, csr?: Buffer): Promise<WireSignSvidRequest> {
  return {
    csr: csr ?? (await createCsr(await generateWorkloadKey())),
    attestation: { proof: "joinToken", joinToken: { token }, process: null, metadata: null },
    jwtAudiences: [],
    ttlSeconds: 0,
  };
}

function saToken(key: webcrypto.CryptoKey, subject = "system:serviceaccount:shop:api") {
  return new SignJWT({
    "kubernetes.io": {
      namespace: "shop",
      serviceaccount: { name: "api", uid: "9c1" },
      pod: { name: "api-7d9f", uid: "1f2" },
    },
  })
    .setProtectedHeader({ alg: "ES256", kid: "cluster-1" })
    .setIssuer(ISSUER)
    .setAudience("sigil")
    .setSubject(subject)
    .setIssuedAt()
    .setExpirationTime("10m")
    .sign(key);
}

describe("SVID issuance over gRPC", () => {
  it("issues an SVID and a bound JWT-SVID for a join token, with process facts recorded as labels", async () => {
    const { token } = await h.plane.tokens.create({
      name: "billing",
      labels: { app: "billing", env: "prod" },
      ttlSeconds: 600,
    });
    const key = await generateWorkloadKey();
    const request = await joinRequest(token, await createCsr(key));
    request.attestation!.process = await collectProcessFacts(process.pid);
    request.attestation!.metadata = {
      cloudRegion: "eu-west-1",
      cloudZone: "eu-west-1a",
      image: "registry.test/billing@sha256:ab",
      vulnerabilities: { critical: 0, high: 2, medium: 1, low: 0 },
    };
    const res = await client.signSvid(request);
    expect(res.spiffeId).toBe("spiffe://sigil.local/workload/billing");
    const bundle = parseBundle("sigil.local", res.trustBundleJson);
    const verified = verifySvid(res.certChain, { bundle, purpose: "client" });
    expect(verified.identity.labels).toMatchObject({
      app: "billing",
      env: "prod",
      "proc.uid": String(process.getuid?.()),
      "proc.exe": process.execPath,
      "cloud.region": "eu-west-1",
      "vuln.high": "2",
    });
    expect(verified.attestedLabels.find((l) => l.key === "app")?.provenance).toBe("join-token");
    expect(verified.attestedLabels.find((l) => l.key === "proc.sha256")?.provenance).toBe("proc");
    expect(verified.attestedLabels.find((l) => l.key === "image")?.provenance).toBe("metadata-file");
    const leaf = new x509.X509Certificate(res.certChain[0] as Buffer);
    expect(leaf.notAfter.getTime() - leaf.notBefore.getTime()).toBe(3600_000);
    const jwt = await verifyJwtSvid(res.jwtSvid, {
      bundle,
      audience: "sigil",
      certificate: res.certChain[0] as Buffer,
    });
    expect(jwt.spiffeId).toBe(res.spiffeId);
    expect(jwt.labels.app).toBe("billing");
    expect(h.plane.registry.get(res.spiffeId)?.serial).toBe(verified.identity.serial);
  });

  it("refuses a reused join token and an expired one, naming why", async () => {
    const { token } = await h.plane.tokens.create({ name: "once", labels: {}, ttlSeconds: 600 });
    await client.signSvid(await joinRequest(token));
    const reused = await refusal(client.signSvid(await joinRequest(token)));
    expect(reused.code).toBe(grpc.status.UNAUTHENTICATED);
    expect(reused.message).toMatch(/already used/);
    const expired = await h.plane.tokens.create({
      name: "late",
      labels: {},
      ttlSeconds: 1,
      now: new Date(Date.now() - 5000),
    });
    const late = await refusal(client.signSvid(await joinRequest(expired.token)));
    expect(late.code).toBe(grpc.status.UNAUTHENTICATED);
    expect(late.message).toMatch(/expired at/);
    const unknown = await refusal(client.signSvid(await joinRequest("sgjt_not-a-token")));
    expect(unknown.message).toMatch(/not known/);
  });

  it("uses a join token only once even when two requests race", async () => {
    const { token } = await h.plane.tokens.create({ name: "race", labels: {}, ttlSeconds: 600 });
    const results = await Promise.allSettled([
      client.signSvid(await joinRequest(token)),
      client.signSvid(await joinRequest(token)),
    ]);
    expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(1);
  });

  it("accepts a valid Kubernetes service-account token and refuses forged or misdirected ones", async () => {
    const request = async (sat: string): Promise<WireSignSvidRequest> => ({
      csr: await createCsr(await generateWorkloadKey()),
      attestation: {
        proof: "kubernetes",
        kubernetes: { serviceAccountToken: sat },
        process: null,
        metadata: null,
      },
      jwtAudiences: ["payments"],
      ttlSeconds: 0,
    });
    const ok = await client.signSvid(await request(await saToken(clusterKey)));
    expect(ok.spiffeId).toBe("spiffe://sigil.local/ns/shop/sa/api");
    expect(Object.fromEntries(ok.labels.map((l) => [l.key, l.value]))).toMatchObject({
      "k8s.ns": "shop",
      "k8s.sa": "api",
      "k8s.pod": "api-7d9f",
    });

    const forger = await generateKeyPair("ES256");
    const forged = await refusal(
      client.signSvid(await request(await saToken(forger.privateKey as webcrypto.CryptoKey))),
    );
    expect(forged.code).toBe(grpc.status.UNAUTHENTICATED);
    expect(forged.message).toMatch(/signature verification failed/);

    const wrongSub = await refusal(
      client.signSvid(await request(await saToken(clusterKey, "system:serviceaccount:kube-system:admin"))),
    );
    expect(wrongSub.message).toMatch(/does not match system:serviceaccount:shop:api/);

    const otherAudience = await new SignJWT({
      "kubernetes.io": {
        namespace: "shop",
        serviceaccount: { name: "api", uid: "1" },
        pod: { name: "p", uid: "2" },
      },
    })
      .setProtectedHeader({ alg: "ES256", kid: "cluster-1" })
      .setIssuer(ISSUER)
      .setAudience("vault")
      .setSubject("system:serviceaccount:shop:api")
      .setIssuedAt()
      .setExpirationTime("10m")
      .sign(clusterKey);
    expect((await refusal(client.signSvid(await request(otherAudience)))).message).toMatch(/aud/);
  });

  it("refuses CSRs that ask for more than attestation proved", async () => {
    const key = await generateWorkloadKey();
    const csrWith = async (extensions: x509.Extension[], name?: string) =>
      Buffer.from(
        (
          await x509.Pkcs10CertificateRequestGenerator.create({
            keys: key.keys,
            signingAlgorithm: { name: "ECDSA", hash: "SHA-256" },
            extensions,
            name,
          })
        ).rawData,
      );
    const cases: [string, Buffer, RegExp][] = [
      [
        "another SPIFFE ID",
        await csrWith([
          new x509.SubjectAlternativeNameExtension([
            { type: "url", value: "spiffe://sigil.local/workload/admin" },
          ]),
        ]),
        /SAN url:spiffe:\/\/sigil.local\/workload\/admin/,
      ],
      [
        "a DNS name",
        await csrWith([new x509.SubjectAlternativeNameExtension([{ type: "dns", value: "bank.example" }])]),
        /SAN dns:bank.example/,
      ],
      [
        "an unattested label",
        await csrWith([
          new x509.Extension(labelsExtensionDer([{ key: "role", value: "admin", provenance: "static" }])),
        ]),
        /label "role"/,
      ],
      [
        "another label value",
        await csrWith([
          new x509.Extension(labelsExtensionDer([{ key: "app", value: "admin", provenance: "join-token" }])),
        ]),
        /app=admin; attestation proved app=web/,
      ],
      [
        "CA powers",
        await csrWith([new x509.BasicConstraintsExtension(true, undefined, true)]),
        /CA certificate/,
      ],
      [
        "certificate signing",
        await csrWith([new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign, true)]),
        /key usages/,
      ],
      ["a subject", await csrWith([], "CN=admin"), /subject "CN=admin"/],
    ];
    for (const [what, csr, reason] of cases) {
      const { token } = await h.plane.tokens.create({ name: "web", labels: { app: "web" }, ttlSeconds: 600 });
      const err = await refusal(client.signSvid(await joinRequest(token, csr)));
      expect(err.code, what).toBe(grpc.status.PERMISSION_DENIED);
      expect(err.message, what).toMatch(reason);
      // The refused request must not have used the token up.
      await expect(client.signSvid(await joinRequest(token)), what).resolves.toMatchObject({
        spiffeId: "spiffe://sigil.local/workload/web",
      });
    }
    const matching = await csrWith([
      new x509.SubjectAlternativeNameExtension([{ type: "url", value: "spiffe://sigil.local/workload/web" }]),
      new x509.Extension(labelsExtensionDer([{ key: "app", value: "web", provenance: "join-token" }])),
    ]);
    const { token } = await h.plane.tokens.create({ name: "web", labels: { app: "web" }, ttlSeconds: 600 });
    await expect(client.signSvid(await joinRequest(token, matching))).resolves.toMatchObject({
      spiffeId: "spiffe://sigil.local/workload/web",
    });
  });

  it("rejects a malformed CSR and one whose signature does not match", async () => {
    const { token } = await h.plane.tokens.create({ name: "junk", labels: {}, ttlSeconds: 600 });
    const junk = await refusal(client.signSvid(await joinRequest(token, Buffer.from("not a csr"))));
    expect(junk.code).toBe(grpc.status.INVALID_ARGUMENT);
    const csr = await createCsr(await generateWorkloadKey());
    csr.writeUInt8((csr.at(-5) as number) ^ 0xff, csr.length - 5);
    const tampered = await refusal(client.signSvid(await joinRequest(token, csr)));
    expect(tampered.code).toBe(grpc.status.INVALID_ARGUMENT);
  });

  it("renews with proof of the current key, refuses a forged proof and any renewal after revocation", async () => {
    const { token } = await h.plane.tokens.create({ name: "renewer", labels: { app: "r" }, ttlSeconds: 600 });
    const key = await generateWorkloadKey();
    const first = await client.signSvid(await joinRequest(token, await createCsr(key)));
    const nextKey = await generateWorkloadKey();
    const csr = await createCsr(nextKey);
    const renewal = (signature: Buffer): WireSignSvidRequest => ({
      csr,
      attestation: {
        proof: "renewal",
        renewal: { certChain: first.certChain, csrSignature: signature },
        process: null,
        metadata: null,
      },
      jwtAudiences: [],
      ttlSeconds: 0,
    });
    const forged = await refusal(client.signSvid(renewal(signWithKey(nextKey, csr))));
    expect(forged.code).toBe(grpc.status.UNAUTHENTICATED);
    expect(forged.message).toMatch(/not a signature over the CSR/);
    const renewed = await client.signSvid(renewal(signWithKey(key, csr)));
    expect(renewed.spiffeId).toBe(first.spiffeId);
    expect(Object.fromEntries(renewed.labels.map((l) => [l.key, l.value]))).toEqual({ app: "r" });

    await h.plane.registry.revoke(first.spiffeId, "compromised", 3600);
    const afterRevoke = await refusal(client.signSvid(renewal(signWithKey(key, csr))));
    expect(afterRevoke.code).toBe(grpc.status.PERMISSION_DENIED);
    expect(afterRevoke.message).toMatch(/revoked/);
    const { token: again } = await h.plane.tokens.create({
      name: "renewer",
      labels: { app: "r" },
      ttlSeconds: 600,
    });
    expect((await refusal(client.signSvid(await joinRequest(again)))).message).toMatch(
      /was revoked at .*compromised/,
    );
  });

  it("re-issues within seconds when a vulnerability label appears in the metadata file", async () => {
    const metadataPath = join(h.dataDir, "node-metadata.yaml");
    await writeFile(metadataPath, "cloud: { region: eu-west-1 }\nvulnerabilities: { critical: 0 }\n");
    const { token } = await h.plane.tokens.create({
      name: "scanner",
      labels: { app: "scan" },
      ttlSeconds: 600,
    });
    const { readMetadataFile } = await import("../../sidecar/identity/workload-facts.ts");
    const manager = new RotationManager({
      client,
      trustDomain: "sigil.local",
      bootstrapProof: async () => ({ joinToken: token }),
      facts: async () => ({ metadata: await readMetadataFile(metadataPath) }),
      watchFile: metadataPath,
    });
    try {
      const first = await manager.start();
      expect(first.labels.find((l) => l.key === "vuln.critical")?.value).toBe("0");
      const rotated = once(manager, "rotated", { signal: AbortSignal.timeout(5000) });
      await writeFile(metadataPath, "cloud: { region: eu-west-1 }\nvulnerabilities: { critical: 3 }\n");
      const [next] = (await rotated) as [typeof first];
      expect(next.labels.find((l) => l.key === "vuln.critical")?.value).toBe("3");
      expect(next.certChain[0]?.equals(first.certChain[0] as Buffer)).toBe(false);
    } finally {
      manager.stop();
    }
  });

  it("announces when operator labels change what a workload's certificate should carry", async () => {
    const { token } = await h.plane.tokens.create({
      name: "labelled",
      labels: { app: "l" },
      ttlSeconds: 600,
    });
    const res = await client.signSvid(await joinRequest(token));
    const event = once(h.plane.registry, "reissue-required", { signal: AbortSignal.timeout(2000) });
    await h.plane.registry.setStaticLabels(res.spiffeId, { team: "payments" });
    const [spiffeId, labels] = await event;
    expect(spiffeId).toBe(res.spiffeId);
    expect(labels).toContainEqual({ key: "team", value: "payments", provenance: "static" });
    await expect(h.plane.registry.setStaticLabels(res.spiffeId, { app: "other" })).rejects.toThrow(
      /set by join-token attestation/,
    );
    const change = (set: Record<string, string>, remove: string[], overwrite = false) =>
      h.plane.registry.changeStaticLabels(res.spiffeId, { set, remove, overwrite });
    const keys = (r: { staticLabels: readonly { key: string; value: string }[] }) =>
      r.staticLabels.map((l) => `${l.key}=${l.value}`).sort();
    expect(keys(await change({ "vuln.critical": "3" }, []))).toEqual(["team=payments", "vuln.critical=3"]);
    await expect(change({ "vuln.critical": "0" }, [])).rejects.toThrow(/already "3".*overwrite/);
    expect(keys(await change({ "vuln.critical": "3" }, ["absent"]))).toEqual([
      "team=payments",
      "vuln.critical=3",
    ]);
    expect(keys(await change({ "vuln.critical": "0" }, ["team"], true))).toEqual(["vuln.critical=0"]);
    await expect(change({ app: "other" }, [])).rejects.toThrow(/set by join-token attestation/);
  });
});

describe("Kubernetes attestation settings", () => {
  it("reads issuer, audiences and the JWKS file, and names what is wrong", async () => {
    const { readKubernetesAttestorConfig } = await import("../../controlplane/attestation/kubernetes.ts");
    const dir = h.dataDir;
    await writeFile(
      join(dir, "jwks.json"),
      JSON.stringify({ keys: [{ kty: "EC", crv: "P-256", x: "x", y: "y", kid: "k" }] }),
    );
    await writeFile(join(dir, "k8s.yaml"), `issuer: ${ISSUER}\naudiences: [sigil]\njwksFile: jwks.json\n`);
    const config = await readKubernetesAttestorConfig(join(dir, "k8s.yaml"));
    expect(config).toMatchObject({ issuer: ISSUER, audiences: ["sigil"], jwks: { keys: [{ kid: "k" }] } });
    await writeFile(join(dir, "bad.yaml"), `issuer: ${ISSUER}\naudiences: []\njwksFile: jwks.json\n`);
    await expect(readKubernetesAttestorConfig(join(dir, "bad.yaml"))).rejects.toThrow(/bad.yaml: audiences/);
    await writeFile(
      join(dir, "nokeys.yaml"),
      `issuer: ${ISSUER}\naudiences: [sigil]\njwksFile: missing.json\n`,
    );
    await expect(readKubernetesAttestorConfig(join(dir, "nokeys.yaml"))).rejects.toThrow(
      /cannot read .*missing.json/,
    );
  });
});
