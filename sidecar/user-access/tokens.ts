import { decodeJwt, decodeProtectedHeader, errors, jwtVerify } from "jose";
import type { JWTPayload, JWTVerifyGetKey } from "jose";

/**
 * Token verification with jose: signature against the issuer's JWKS (`keys.ts`), issuer, audience,
 * expiry and, for ID tokens, the nonce of the sign-in that asked for it. Only asymmetric algorithms
 * are accepted: `alg: none` proves nothing, and an HMAC "signature" verifies with a key the verifier
 * holds too, so anyone who knows the client secret or a public key mistaken for one could mint it.
 */

export const ASYMMETRIC_ALGORITHMS = [
  "RS256",
  "RS384",
  "RS512",
  "PS256",
  "PS384",
  "PS512",
  "ES256",
  "ES384",
  "ES512",
  "EdDSA",
] as const;

/** Tolerated clock difference with the provider, seconds. */
const CLOCK_TOLERANCE = 30;

export class TokenError extends Error {}

/** The header's algorithm, refused before any key is looked up if it is not asymmetric. */
function checkAlgorithm(token: string): void {
  let alg: string | undefined;
  try {
    alg = decodeProtectedHeader(token).alg;
  } catch (err) {
    throw new TokenError(`token header cannot be decoded: ${(err as Error).message}`);
  }
  if (alg === undefined || !(ASYMMETRIC_ALGORITHMS as readonly string[]).includes(alg))
    throw new TokenError(
      `token algorithm "${alg ?? ""}" is refused: only asymmetric signatures are accepted`,
    );
}

async function verify(
  token: string,
  keys: JWTVerifyGetKey,
  options: { issuer: string; audience: readonly string[]; required: string[]; now?: Date },
): Promise<JWTPayload> {
  checkAlgorithm(token);
  try {
    const { payload } = await jwtVerify(token, keys, {
      issuer: options.issuer,
      audience: [...options.audience],
      algorithms: [...ASYMMETRIC_ALGORITHMS],
      requiredClaims: options.required,
      clockTolerance: CLOCK_TOLERANCE,
      ...(options.now === undefined ? {} : { currentDate: options.now }),
    });
    return payload;
  } catch (err) {
    if (err instanceof errors.JOSEError) throw new TokenError(`${err.code}: ${err.message}`);
    throw err;
  }
}

export interface IdTokenCheck {
  readonly keys: JWTVerifyGetKey;
  readonly issuer: string;
  readonly clientId: string;
  /**
   * The nonce this sign-in sent: an ID token minted for another sign-in does not carry it. Null for
   * an ID token from a refresh, which answers no sign-in.
   */
  readonly nonce: string | null;
  readonly now?: Date;
}

/** Verifies an ID token from the provider's token endpoint (OpenID Connect Core §3.1.3.7). */
export async function verifyIdToken(token: string, check: IdTokenCheck): Promise<JWTPayload> {
  const payload = await verify(token, check.keys, {
    issuer: check.issuer,
    audience: [check.clientId],
    required: ["sub", "exp", "iat"],
    ...(check.now === undefined ? {} : { now: check.now }),
  });
  if (check.nonce !== null && payload.nonce !== check.nonce)
    throw new TokenError("ID token nonce does not match this sign-in");
  if (Array.isArray(payload.aud) && payload.aud.length > 1 && payload.azp !== check.clientId)
    throw new TokenError("ID token has several audiences and another authorized party");
  return payload;
}

/** An issuer whose bearer tokens are accepted, and for which audiences. */
export interface BearerIssuer {
  readonly issuer: string;
  readonly audiences: readonly string[];
  readonly keys: () => Promise<JWTVerifyGetKey>;
}

/** Verifies `Authorization: Bearer` JWTs from a fixed list of issuers. */
export class BearerVerifier {
  private readonly issuers: ReadonlyMap<string, BearerIssuer>;

  constructor(issuers: readonly BearerIssuer[]) {
    this.issuers = new Map(issuers.map((i) => [i.issuer, i]));
  }

  async verify(token: string, now?: Date): Promise<JWTPayload> {
    checkAlgorithm(token);
    let iss: unknown;
    try {
      iss = decodeJwt(token).iss;
    } catch (err) {
      throw new TokenError(`bearer token cannot be decoded: ${(err as Error).message}`);
    }
    // The issuer is read unverified only to pick the keys; the signature then proves it.
    const trusted = typeof iss === "string" ? this.issuers.get(iss) : undefined;
    if (trusted === undefined) throw new TokenError(`bearer token issuer "${String(iss)}" is not trusted`);
    return verify(token, await trusted.keys(), {
      issuer: trusted.issuer,
      audience: trusted.audiences,
      required: ["sub", "exp"],
      ...(now === undefined ? {} : { now }),
    });
  }
}
