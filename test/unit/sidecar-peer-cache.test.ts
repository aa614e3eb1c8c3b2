import { X509Certificate } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { TrustBundle } from "../../core/svid/bundle.ts";
import { RevocationIndex } from "../../core/svid/revocation.ts";
import { SvidVerificationError } from "../../core/svid/verify.ts";
import { PeerVerifier } from "../../sidecar/tls/peer-cache.ts";
import { MeshPki, TRUST_DOMAIN } from "../support/sidecar-mesh.ts";

function chainOf(pem: string): Buffer[] {
  return (pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? []).map(
    (block) => new X509Certificate(block).raw,
  );
}

function rejection(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    if (err instanceof SvidVerificationError) return err.reason;
    throw err;
  }
  throw new Error("expected a rejection");
}

describe("PeerVerifier (remembered peer chains)", () => {
  let pki: MeshPki;
  let bundle: TrustBundle;
  const none = RevocationIndex.empty(TRUST_DOMAIN);

  beforeAll(async () => {
    pki = await MeshPki.create();
    bundle = pki.ca.bundle();
  });
  afterAll(async () => {
    await pki.close();
  });

  it("reuses the verified identity for the same chain, purpose and bundle", async () => {
    const chain = chainOf((await pki.credentials("web", { app: "web" })).certChainPem);
    const verifier = new PeerVerifier();
    const first = verifier.verifyChain(chain, { bundle, purpose: "client", revocations: none });
    expect(first.identity.spiffeId).toBe(pki.spiffeId("web"));
    expect(first.identity.labels).toEqual({ app: "web", "provenance.sigil.dev/app": "operator" });
    expect(verifier.verifyChain(chain, { bundle, purpose: "client", revocations: none })).toBe(first);
    expect(verifier.verifyChain(chain, { bundle, purpose: "server", revocations: none })).not.toBe(first);
  });

  it("refuses a remembered peer as soon as it is revoked", async () => {
    const chain = chainOf((await pki.credentials("db", { app: "db" })).certChainPem);
    const verifier = new PeerVerifier();
    verifier.verifyChain(chain, { bundle, purpose: "client", revocations: none });
    const revoked = new RevocationIndex({
      trustDomain: TRUST_DOMAIN,
      sequence: 1,
      entries: [
        { spiffeId: pki.spiffeId("db"), revokedAtMs: 1, expiresAtMs: Date.now() + 3_600_000, reason: "test" },
      ],
    });
    expect(
      rejection(() => verifier.verifyChain(chain, { bundle, purpose: "client", revocations: revoked })),
    ).toBe("revoked");
  });

  it("checks a remembered chain again against a new trust bundle", async () => {
    const rogue = chainOf((await pki.credentials("api", { app: "api" }, { rogue: true })).certChainPem);
    const verifier = new PeerVerifier();
    const rogueBundle = pki.rogueCa.bundle();
    verifier.verifyChain(rogue, { bundle: rogueBundle, purpose: "client", revocations: none });
    expect(
      rejection(() => verifier.verifyChain(rogue, { bundle, purpose: "client", revocations: none })),
    ).toBe("untrusted");
  });

  it("forgets a chain once it has expired", async () => {
    const issuedAt = new Date(Date.now() - 3_500_000);
    const creds = await pki.credentials("old", { app: "old" }, { ttlSeconds: 3600, now: issuedAt });
    const chain = chainOf(creds.certChainPem);
    let now = new Date();
    const verifier = new PeerVerifier(() => now);
    verifier.verifyChain(chain, { bundle, purpose: "client", revocations: none });
    now = new Date(issuedAt.getTime() + 3_700_000);
    expect(
      rejection(() => verifier.verifyChain(chain, { bundle, purpose: "client", revocations: none })),
    ).toBe("expired");
  });

  it("never remembers a chain that failed", async () => {
    const rogue = chainOf((await pki.credentials("x", { app: "x" }, { rogue: true })).certChainPem);
    const verifier = new PeerVerifier();
    for (let i = 0; i < 2; i++) {
      expect(
        rejection(() => verifier.verifyChain(rogue, { bundle, purpose: "client", revocations: none })),
      ).toBe("untrusted");
    }
    expect(rejection(() => verifier.verifyChain([], { bundle, purpose: "client", revocations: none }))).toBe(
      "malformed",
    );
  });
});
