import { EncryptJWT, jwtDecrypt } from "jose";
import type { JWTPayload } from "jose";

/**
 * Sealed cookies: a JWE (`dir`, AES-256-GCM) under the session key, so the browser holds state it can
 * neither read nor change. The audience says what a cookie is for, so a sign-in transaction cannot
 * stand in for a session. Time comes from `now` (milliseconds), an input, so expiry can be decided by
 * a test without waiting.
 */

export type SealedPurpose = "sigil-session" | "sigil-sign-in";

export class SessionKeyError extends Error {}

/** A session key file holds 32 random bytes, base64 (e.g. `openssl rand -base64 32`). */
export function parseSessionKey(text: string, file: string): Uint8Array {
  const trimmed = text.trim();
  const key = Buffer.from(trimmed, "base64");
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(trimmed) || key.length !== 32)
    throw new SessionKeyError(`${file}: a session key is 32 random bytes, base64 (got ${key.length} bytes)`);
  return new Uint8Array(key);
}

export class SealedCookies {
  constructor(
    private readonly key: Uint8Array,
    readonly now: () => number,
  ) {}

  /** Seconds since the epoch, as the JWT claims count. */
  seconds(): number {
    return Math.floor(this.now() / 1000);
  }

  seal(purpose: SealedPurpose, claims: Record<string, unknown>, lifetimeSeconds: number): Promise<string> {
    const now = this.seconds();
    return new EncryptJWT(claims)
      .setProtectedHeader({ alg: "dir", enc: "A256GCM" })
      .setAudience(purpose)
      .setIssuedAt(now)
      .setExpirationTime(now + lifetimeSeconds)
      .encrypt(this.key);
  }

  /** The claims of a cookie this key sealed for `purpose` and that has not expired; else null. */
  async open(purpose: SealedPurpose, value: string): Promise<JWTPayload | null> {
    try {
      const { payload } = await jwtDecrypt(value, this.key, {
        audience: purpose,
        keyManagementAlgorithms: ["dir"],
        contentEncryptionAlgorithms: ["A256GCM"],
        requiredClaims: ["exp", "iat"],
        currentDate: new Date(this.now()),
      });
      return payload;
    } catch {
      return null;
    }
  }
}
