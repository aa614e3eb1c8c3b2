import type { JWTPayload } from "jose";
import type { UserIdentity } from "../../core/user.ts";
import type { ClaimMapping } from "./config.ts";

/**
 * Verified token claims → the user policy decides on, through the configured mapping (a provider that
 * calls groups `roles`, or puts the email in `upn`). A token without a usable subject is refused;
 * optional claims of the wrong shape are refused too rather than dropped, so a mapping mistake shows
 * up as an error and not as a user who silently lost their groups.
 */

export class ClaimsError extends Error {}

const MAX_GROUPS = 256;
/** Half of a UTF-16 pair without the other: no field value or cookie can carry it. */
const LONE_SURROGATE = /[\uD800-\uDFFF]/u;

function text(value: unknown, name: string): string {
  if (typeof value !== "string" || value === "" || LONE_SURROGATE.test(value))
    throw new ClaimsError(`claim "${name}" is not a non-empty string`);
  return value;
}

function groupsOf(value: unknown, name: string): string[] {
  if (value === undefined) return [];
  // Some providers send a single group as a string.
  const list = typeof value === "string" ? [value] : value;
  if (!Array.isArray(list)) throw new ClaimsError(`claim "${name}" is not a list of strings`);
  if (list.length > MAX_GROUPS) throw new ClaimsError(`claim "${name}" has more than ${MAX_GROUPS} groups`);
  return list.map((g) => text(g, name));
}

export function userFromClaims(payload: JWTPayload, mapping: ClaimMapping): UserIdentity {
  const issuer = text(payload.iss, "iss");
  const sub = text(payload[mapping.sub], mapping.sub);
  const email = payload[mapping.email];
  const verified = payload[mapping.emailVerified];
  if (verified !== undefined && typeof verified !== "boolean")
    throw new ClaimsError(`claim "${mapping.emailVerified}" is not a boolean`);
  const user: UserIdentity = {
    issuer,
    sub,
    groups: groupsOf(payload[mapping.groups], mapping.groups),
    ...(email === undefined ? {} : { email: text(email, mapping.email) }),
    ...(verified === undefined ? {} : { emailVerified: verified }),
  };
  return user;
}
