import { createRemoteJWKSet } from "jose";
import type { JWTVerifyGetKey } from "jose";
import { z } from "zod";

/**
 * The signing keys of a trusted bearer-token issuer that is not the sign-in provider: its JWKS URL as
 * configured, or as its discovery document names it (read once; again after a failure). The key set
 * is a jose remote JWKS, cached and re-fetched for an unknown key id (rotation).
 */

const discoveryDocument = z.object({ issuer: z.string(), jwks_uri: z.string().url() });
const TIMEOUT_MS = 10_000;

function keySet(uri: string): JWTVerifyGetKey {
  return createRemoteJWKSet(new URL(uri), {
    timeoutDuration: TIMEOUT_MS,
    cooldownDuration: 30_000,
    cacheMaxAge: 600_000,
  });
}

async function discoverJwksUri(issuer: string): Promise<string> {
  const url = `${issuer.replace(/\/$/, "")}/.well-known/openid-configuration`;
  const res = await fetch(url, { signal: AbortSignal.timeout(TIMEOUT_MS), redirect: "error" });
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status}`);
  const doc = discoveryDocument.parse(await res.json());
  if (doc.issuer !== issuer) throw new Error(`${url} names issuer "${doc.issuer}", not "${issuer}"`);
  return doc.jwks_uri;
}

export function remoteIssuerKeys(
  issuer: string,
  jwksUri: string | undefined,
): () => Promise<JWTVerifyGetKey> {
  if (jwksUri !== undefined) {
    const keys = keySet(jwksUri);
    return () => Promise.resolve(keys);
  }
  let found: Promise<JWTVerifyGetKey> | null = null;
  return () => {
    found ??= discoverJwksUri(issuer).then(keySet, (err: unknown) => {
      found = null;
      throw new Error(`keys of issuer ${issuer} unavailable: ${(err as Error).message}`);
    });
    return found;
  };
}
