import { createHash } from "node:crypto";
import { decodeProtectedHeader, errors, importJWK, jwtVerify } from "jose";
import { z } from "zod";
import type { Labels } from "../labels.ts";
import { parseSpiffeId } from "../identity.ts";
import type { TrustBundle } from "./bundle.ts";

/** Name of the JWT claim carrying the workload's labels. */
export const LABELS_CLAIM = "labels";

export class JwtSvidError extends Error {}

/** Most audiences one JWT-SVID may name: each is one more service the token can be replayed to. */
export const MAX_JWT_AUDIENCES = 8;

/** Why `audience` cannot go into a JWT-SVID (1..8 non-empty strings of at most 256 characters), or null. */
export function jwtAudienceProblem(audience: readonly string[]): string | null {
  if (audience.length === 0) return "a JWT-SVID needs at least one audience";
  if (audience.length > MAX_JWT_AUDIENCES || audience.some((a) => a.length === 0 || a.length > 256))
    return `JWT audiences must be 1..${MAX_JWT_AUDIENCES} non-empty strings of at most 256 characters`;
  return null;
}

export interface VerifiedJwtSvid {
  readonly spiffeId: string;
  readonly labels: Labels;
  readonly audience: readonly string[];
  readonly expiresAt: Date;
  /** base64url SHA-256 of the certificate the token is bound to. */
  readonly certificateThumbprint: string;
}

/** The `x5t#S256` thumbprint of a DER certificate (RFC 8705 confirmation). */
export function certificateThumbprint(der: Buffer): string {
  return createHash("sha256").update(der).digest("base64url");
}

const claimsSchema = z.object({
  sub: z.string(),
  labels: z.record(z.string(), z.string()),
  cnf: z.object({ "x5t#S256": z.string().min(1) }),
});

/** A JWT-SVID whose signature, audience, expiry and subject checked out, with every claim it carries. */
export interface VerifiedJwtToken {
  readonly spiffeId: string;
  readonly audience: readonly string[];
  readonly expiresAt: Date;
  readonly claims: Readonly<Record<string, unknown>>;
}

/**
 * Verifies a JWT-SVID as the SPIFFE JWT-SVID rules ask, against the bundle's JWT authorities: ES256
 * (the only algorithm Sigil's keys sign with), `typ` absent or JWT/JOSE, a known `kid`, `aud`
 * containing `audience`, `exp` in the future, `sub` a SPIFFE ID of the bundle's trust domain.
 */
export async function verifyJwtSvidToken(
  token: string,
  options: { bundle: TrustBundle; audience: string; now?: Date },
): Promise<VerifiedJwtToken> {
  let header: ReturnType<typeof decodeProtectedHeader>;
  try {
    header = decodeProtectedHeader(token);
  } catch (err) {
    throw new JwtSvidError(`JWT-SVID header cannot be decoded: ${(err as Error).message}`);
  }
  if (header.typ !== undefined && header.typ !== "JWT" && header.typ !== "JOSE")
    throw new JwtSvidError(`JWT-SVID typ "${header.typ}" is neither JWT nor JOSE`);
  const kid = header.kid;
  const authority = options.bundle.jwtAuthorities.find((a) => a.kid === kid);
  if (!authority)
    throw new JwtSvidError(
      `JWT-SVID key id "${kid ?? ""}" is not in the ${options.bundle.trustDomain} bundle`,
    );
  const key = await importJWK({ ...authority.jwk }, "ES256");
  let payload: Record<string, unknown>;
  try {
    ({ payload } = await jwtVerify(token, key, {
      algorithms: ["ES256"],
      audience: options.audience,
      requiredClaims: ["sub", "exp", "aud"],
      currentDate: options.now,
    }));
  } catch (err) {
    const reason = err instanceof errors.JOSEError ? `${err.code}: ${err.message}` : (err as Error).message;
    throw new JwtSvidError(`JWT-SVID rejected: ${reason}`);
  }
  const sub = typeof payload.sub === "string" ? payload.sub : "";
  const id = parseSpiffeId(sub);
  if (!id || id.trustDomain !== options.bundle.trustDomain || id.path === "") {
    throw new JwtSvidError(
      `JWT-SVID sub "${sub}" is not a workload SPIFFE ID in ${options.bundle.trustDomain}`,
    );
  }
  const aud = payload.aud;
  return {
    spiffeId: sub,
    audience: Array.isArray(aud) ? (aud as string[]) : [aud as string],
    expiresAt: new Date((payload.exp as number) * 1000),
    claims: payload,
  };
}

/**
 * Verifies a JWT-SVID Sigil issued with an X.509-SVID (`verifyJwtSvidToken`, then its `labels` and
 * `cnf` claims); when `certificate` is given the token's `cnf` must name that certificate.
 */
export async function verifyJwtSvid(
  token: string,
  options: { bundle: TrustBundle; audience: string; certificate?: Buffer; now?: Date },
): Promise<VerifiedJwtSvid> {
  const verified = await verifyJwtSvidToken(token, options);
  const claims = claimsSchema.safeParse(verified.claims);
  if (!claims.success) {
    throw new JwtSvidError(
      `JWT-SVID claim ${claims.error.issues[0]?.path.join(".")}: ${claims.error.issues[0]?.message}`,
    );
  }
  const thumbprint = claims.data.cnf["x5t#S256"];
  if (options.certificate && certificateThumbprint(options.certificate) !== thumbprint) {
    throw new JwtSvidError("JWT-SVID is bound to a different certificate (cnf x5t#S256 mismatch)");
  }
  return {
    spiffeId: verified.spiffeId,
    labels: claims.data.labels,
    audience: verified.audience,
    expiresAt: verified.expiresAt,
    certificateThumbprint: thumbprint,
  };
}
