import { createPrivateKey, webcrypto } from "node:crypto";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { controlPlaneSpiffeId } from "../../controlplane/ca/authority.ts";
import type { KubernetesAttestorConfig } from "../../controlplane/attestation/kubernetes.ts";
import * as grpc from "@grpc/grpc-js";
import {
  IdentityServiceDefinition,
  identityServiceHandlers,
} from "../../controlplane/identity/grpc-service.ts";
import type { IdentityPlane } from "../../controlplane/identity/plane.ts";
import { openIdentityPlane } from "../../controlplane/identity/plane.ts";
import { bundleRootsPem } from "../../core/svid/bundle.ts";
import { x509 } from "../../core/svid/x509.ts";
import { expect } from "vitest";
import { IdentityClient, IdentityRequestError } from "../../sidecar/identity/identity-client.ts";

/** A control plane's identity side on a real TLS gRPC listener on loopback, in a temporary data dir. */
export interface IdentityHarness {
  readonly dataDir: string;
  readonly plane: IdentityPlane;
  readonly server: grpc.Server;
  readonly address: string;
  /** A client that trusts the CA and expects the control plane's SPIFFE ID. */
  newClient(): IdentityClient;
  close(): Promise<void>;
}

export async function startIdentityHarness(
  options: { kubernetes?: KubernetesAttestorConfig; trustDomain?: string; maxLeafTtlSeconds?: number } = {},
): Promise<IdentityHarness> {
  const dataDir = await mkdtemp(join(tmpdir(), "sigil-id-"));
  const plane = await openIdentityPlane({ dataDir, ...options });
  const serving = await plane.ca.issueServingCertificate({
    dnsNames: ["localhost"],
    ipAddresses: ["127.0.0.1"],
  });
  // A plain grpc-js TLS server (server authentication only, as the sidecar's first call needs), so
  // these suites exercise the identity service independently of the control plane's listener.
  const server = new grpc.Server();
  server.addService(IdentityServiceDefinition, identityServiceHandlers({ issuer: plane.issuer }));
  const credentials = grpc.ServerCredentials.createSsl(
    null,
    [{ private_key: Buffer.from(serving.keyPem), cert_chain: Buffer.from(serving.certPem) }],
    false,
  );
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", credentials, (err, p) => (err ? reject(err) : resolve(p))),
  );
  const address = `127.0.0.1:${port}`;
  const clients: IdentityClient[] = [];
  return {
    dataDir,
    plane,
    server,
    address,
    newClient: () => {
      const client = new IdentityClient({
        address,
        caPem: bundleRootsPem(plane.bundle()),
        serverSpiffeId: controlPlaneSpiffeId(plane.ca.trustDomain),
      });
      clients.push(client);
      return client;
    },
    close: async () => {
      for (const c of clients) c.close();
      plane.close();
      server.forceShutdown();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}

/** The signing CA's certificate and key, read from the data dir, for crafting hostile certificates. */
export async function signingCaOf(
  dataDir: string,
): Promise<{ cert: x509.X509Certificate; key: CryptoKeyLike }> {
  const caDir = join(dataDir, "ca");
  const gen = (await readdir(caDir)).filter((n) => n.startsWith("g")).sort()[0] as string;
  const cert = new x509.X509Certificate(await readFile(join(caDir, gen, "ca.crt"), "utf8"));
  const pem = await readFile(join(caDir, gen, "ca.key"), "utf8");
  const der = createPrivateKey(pem).export({ format: "der", type: "pkcs8" });
  const key = await webcrypto.subtle.importKey("pkcs8", der, { name: "ECDSA", namedCurve: "P-256" }, false, [
    "sign",
  ]);
  return { cert, key };
}

export type CryptoKeyLike = webcrypto.CryptoKey;

/** The IdentityRequestError a refused signing request ends in (fails the test if it succeeds). */
export async function refusal(promise: Promise<unknown>): Promise<IdentityRequestError> {
  const err = await promise.then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(IdentityRequestError);
  return err as IdentityRequestError;
}
