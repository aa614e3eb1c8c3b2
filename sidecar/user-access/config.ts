import { z } from "zod";

/**
 * `inbound.userAccess`: which application ports are for people, and the OpenID Connect provider that
 * signs them in. Secrets (client secret, session key) are named by file, never inlined, so a config
 * dump or a ConfigMap never holds them.
 */

const LOOPBACK_HOSTS = new Set(["127.0.0.1", "[::1]", "localhost"]);

/** https, or http only to a loopback host (a provider beside the sidecar, or a test's). */
function urlProblem(value: string): string | null {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return "not an absolute URL";
  }
  if (url.protocol === "https:") return null;
  if (url.protocol === "http:" && LOOPBACK_HOSTS.has(url.hostname)) return null;
  return "must be https (http only to a loopback host)";
}

const secureUrl = z.string().superRefine((value, ctx) => {
  const problem = urlProblem(value);
  if (problem !== null) ctx.addIssue({ code: "custom", message: problem });
});

const path = z.string().regex(/^\/[A-Za-z0-9._~!$&'()*+,;=:@/-]*$/, {
  error: "must be an absolute path without query or fragment",
});

const claimName = z.string().min(1);

const trustedIssuer = z
  .object({
    issuer: secureUrl,
    /** Tokens must name one of these in `aud`. */
    audiences: z.array(z.string().min(1)).min(1),
    /** Where the issuer's keys are; default: `jwks_uri` from its discovery document. */
    jwksUri: secureUrl.optional(),
  })
  .strict();

export const userAccessSchema = z
  .object({
    /** Application ports served to people: requests need a session or a bearer token. */
    ports: z.array(z.number().int().min(1).max(65535)).min(1),
    /** The provider's issuer URL; its discovery document is read from `<issuer>/.well-known/openid-configuration`. */
    issuer: secureUrl,
    clientId: z.string().min(1),
    /** File holding the client secret; absent: a public client (PKCE only). */
    clientSecretFile: z.string().min(1).optional(),
    /** The absolute callback URL registered at the provider; its path is answered by the sidecar. */
    redirectUri: secureUrl,
    /** Where people go to sign out (the sidecar's own path on every user-access port). */
    signOutPath: path.default("/.sigil/sign-out"),
    /** Where the provider sends people after signing out; default: "/" of the redirect URI's origin. */
    postLogoutRedirectUri: secureUrl.optional(),
    scopes: z.array(z.string().min(1)).default(["openid", "email", "profile"]),
    /** File holding 32 random bytes, base64: seals sessions (AES-256-GCM). Replicas share it. */
    sessionKeyFile: z.string().min(1),
    cookie: z
      .object({
        name: z
          .string()
          .regex(/^[A-Za-z0-9_-]+$/)
          .default("__Host-sigil-session"),
        /** Only for a development setup without TLS in front; a `__Host-` name needs it. */
        secure: z.boolean().default(true),
        /** Absolute bound on a session; after it the person signs in again. */
        maxAgeSeconds: z
          .number()
          .int()
          .min(60)
          .max(7 * 24 * 3600)
          .default(8 * 3600),
      })
      .strict()
      .default({ name: "__Host-sigil-session", secure: true, maxAgeSeconds: 8 * 3600 }),
    /** Which token claim feeds each user attribute policy can select on. */
    claims: z
      .object({
        sub: claimName.default("sub"),
        email: claimName.default("email"),
        emailVerified: claimName.default("email_verified"),
        groups: claimName.default("groups"),
      })
      .strict()
      .default({ sub: "sub", email: "email", emailVerified: "email_verified", groups: "groups" }),
    /**
     * `Authorization: Bearer <JWT>` from programs: the provider's own tokens (audience: the client id)
     * when `acceptProviderTokens`, and tokens of these further issuers.
     */
    bearer: z
      .object({
        acceptProviderTokens: z.boolean().default(true),
        trustedIssuers: z.array(trustedIssuer).default([]),
      })
      .strict()
      .default({ acceptProviderTokens: true, trustedIssuers: [] }),
  })
  .strict()
  .superRefine((value, ctx) => {
    if (value.cookie.name.startsWith("__Host-") && !value.cookie.secure)
      ctx.addIssue({
        code: "custom",
        message: "a __Host- cookie must be Secure: rename it or keep secure: true",
        path: ["cookie", "name"],
      });
    if (new Set(value.ports).size !== value.ports.length)
      ctx.addIssue({ code: "custom", message: "a port is listed twice", path: ["ports"] });
  });

export type UserAccessConfig = z.output<typeof userAccessSchema>;
export type UserAccessConfigInput = z.input<typeof userAccessSchema>;
export type ClaimMapping = UserAccessConfig["claims"];
export type TrustedIssuer = z.output<typeof trustedIssuer>;
