/**
 * A person (or a program acting for one) as an enforcement point verified them: the claims of an
 * OpenID Connect ID token or of a bearer JWT from a trusted issuer, mapped by configuration onto the
 * four attributes policy can select on (`user.sub`, `user.email`, `user.email_verified`,
 * `user.groups`). Beside the workload identity of the connection, never instead of it.
 */
export interface UserIdentity {
  /** The issuer that vouched for the claims (the `iss` of the verified token). */
  readonly issuer: string;
  readonly sub: string;
  readonly email?: string;
  readonly emailVerified?: boolean;
  readonly groups: readonly string[];
}

/** The claim keys policy selects on, as spelled in policy documents. */
export const USER_CLAIM_KEYS = ["user.sub", "user.email", "user.email_verified", "user.groups"] as const;
export type UserClaimKey = (typeof USER_CLAIM_KEYS)[number];

/** A claim's values as policy compares them: strings, `email_verified` as "true"/"false", groups one each. */
export function userClaimValues(user: UserIdentity, key: UserClaimKey): readonly string[] {
  switch (key) {
    case "user.sub":
      return [user.sub];
    case "user.email":
      return user.email === undefined ? [] : [user.email];
    case "user.email_verified":
      return user.emailVerified === undefined ? [] : [String(user.emailVerified)];
    case "user.groups":
      return user.groups;
  }
}
