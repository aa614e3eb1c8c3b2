import type { UserIdentity } from "../../core/user.ts";

/**
 * The request fields that tell the application who the person is. Only the sidecar may set them: a
 * client's copy is removed on every path in any case and with `_` for `-` (CGI-style readers take
 * `x_sigil_user` for `x-sigil-user`), exactly as for x-forwarded-client-cert:
 *
 *     x-sigil-user: <sub>
 *     x-sigil-user-email: <email>              (when the token has one)
 *     x-sigil-user-email-verified: true|false  (when the token says)
 *     x-sigil-user-groups: <group>,<group>     (when there are any)
 *     x-sigil-user-issuer: <issuer URL>
 *
 * Values are percent-encoded outside visible ASCII and for `%` and `,`, so a group holding a comma
 * stays one group and no value can carry a line break.
 */

export const USER_FIELD = "x-sigil-user";
const PREFIX = `${USER_FIELD}-`;

/** Whether a lower-cased field name is one of the user fields, in any `_`/`-` spelling. */
export function isUserFieldName(lower: string): boolean {
  if (!lower.startsWith("x") || lower.length < USER_FIELD.length) return false;
  const dashed = lower.replaceAll("_", "-");
  return dashed === USER_FIELD || dashed.startsWith(PREFIX);
}

function encode(value: string): string {
  return value.replace(/[^\x21-\x7e]|[%,]/gu, (c) => encodeURIComponent(c));
}

/** The fields for a verified user, in the order they are sent. */
export function userFields(user: UserIdentity): Record<string, string> {
  const out: Record<string, string> = { [USER_FIELD]: encode(user.sub) };
  if (user.email !== undefined) out[`${PREFIX}email`] = encode(user.email);
  if (user.emailVerified !== undefined) out[`${PREFIX}email-verified`] = String(user.emailVerified);
  if (user.groups.length > 0) out[`${PREFIX}groups`] = user.groups.map(encode).join(",");
  out[`${PREFIX}issuer`] = encode(user.issuer);
  return out;
}
