import { createHash } from "node:crypto";
import { decodeProtectedHeader, errors, importJWK, jwtVerify } from "jose";
import { z } from "zod";
import type { Labels } from "../labels.ts";
import { parseSpiffeId } from "../identity.ts";
import type { TrustBundle } from "./bundle.ts";

/** Name of the JWT claim carrying the workload's labels. */
export const LABELS_CLAIM = "labels";

export class JwtSvidError extends Error {}

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

/**
 * Verifies a JWT-SVID against the bundle's JWT authorities: ES256, known `kid`, `aud` containing
 * `audience`, unexpired, `sub` in the bundle's trust domain; when `certificate` is given the token's
 * `cnf` must name that certificate.
 */
export async function verifyJwtSvid(
  token: string,
  options: { bundle: TrustBundle; audience: string; certificate?: Buffer; now?: Date },
): Promise<VerifiedJwtSvid> {
  let kid: string | undefined;
  try {
    kid = decodeProtectedHeader(token).kid;
  } catch (err) {
    throw new JwtSvidError(`JWT-SVID header cannot be decoded: ${(err as Error).message}`);
  }
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
  const claims = claimsSchema.safeParse(payload);
  if (!claims.success) {
    throw new JwtSvidError(
      `JWT-SVID claim ${claims.error.issues[0]?.path.join(".")}: ${claims.error.issues[0]?.message}`,
    );
  }
  const id = parseSpiffeId(claims.data.sub);
  if (!id || id.trustDomain !== options.bundle.trustDomain) {
    throw new JwtSvidError(
      `JWT-SVID sub "${claims.data.sub}" is not a SPIFFE ID in ${options.bundle.trustDomain}`,
    );
  }
  const thumbprint = claims.data.cnf["x5t#S256"];
  if (options.certificate && certificateThumbprint(options.certificate) !== thumbprint) {
    throw new JwtSvidError("JWT-SVID is bound to a different certificate (cnf x5t#S256 mismatch)");
  }
  const aud = payload.aud;
  return {
    spiffeId: claims.data.sub,
    labels: claims.data.labels,
    audience: Array.isArray(aud) ? (aud as string[]) : [aud as string],
    expiresAt: new Date((payload.exp as number) * 1000),
    certificateThumbprint: thumbprint,
  };
}
