/**
 * A real OpenID Connect provider (oidc-provider) on loopback for the user-access suites: two people
 * in different groups, one confidential web client, and a signing key the test knows (so it can
 * also mint tokens with the provider's own key, and compare with tokens signed by another). Sign-in
 * is the provider's development login page: any password, the login name picks the account.
 */
import { once } from "node:events";
import { createServer } from "node:http";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { exportJWK, generateKeyPair } from "jose";
import type { JWK, KeyObject } from "jose";
import Provider from "oidc-provider";

export interface Person {
  readonly sub: string;
  readonly email: string;
  readonly groups: readonly string[];
}

export const PEOPLE: Readonly<Record<string, Person>> = {
  alice: { sub: "alice", email: "alice@example.test", groups: ["staff", "payments-admins"] },
  bob: { sub: "bob", email: "bob@example.test", groups: ["staff"] },
};

export interface TestProvider {
  readonly issuer: string;
  readonly clientId: string;
  readonly clientSecret: string;
  /** The key the provider signs with (kid "provider-1"). */
  readonly signingKey: KeyObject;
  readonly kid: string;
  close(): Promise<void>;
}

export async function startProvider(client: {
  redirectUri: string;
  postLogoutRedirectUri: string;
}): Promise<TestProvider> {
  const kid = "provider-1";
  const { privateKey } = await generateKeyPair("RS256", { extractable: true });
  const jwk: JWK = { ...(await exportJWK(privateKey)), kid, alg: "RS256", use: "sig" };
  let handler: ReturnType<Provider["callback"]> | null = null;
  const server: Server = createServer((req, res) => {
    if (handler === null) res.writeHead(503).end();
    else handler(req, res);
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const clientId = "payments-web";
  const clientSecret = "a-client-secret-only-this-test-knows";
  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: clientId,
        client_secret: clientSecret,
        redirect_uris: [client.redirectUri],
        post_logout_redirect_uris: [client.postLogoutRedirectUri],
        grant_types: ["authorization_code", "refresh_token"],
        response_types: ["code"],
      },
    ],
    jwks: { keys: [jwk] },
    cookies: { keys: ["provider-cookie-key-for-this-test"] },
    claims: { openid: ["sub"], email: ["email", "email_verified"], groups: ["groups"] },
    scopes: ["openid", "email", "groups", "offline_access"],
    // Claims in the ID token itself, as most providers do for the code flow.
    conformIdTokenClaims: false,
    pkce: { required: () => true },
    // A refresh token for every sign-in, so sessions are refreshed rather than ended.
    issueRefreshToken: () => Promise.resolve(true),
    findAccount(_ctx, id) {
      const person = PEOPLE[id];
      if (person === undefined) return Promise.resolve(undefined);
      return Promise.resolve({
        accountId: id,
        claims: () => ({
          sub: person.sub,
          email: person.email,
          email_verified: true,
          groups: [...person.groups],
        }),
      });
    },
  });
  provider.on("server_error", () => undefined);
  handler = provider.callback();
  return {
    issuer,
    clientId,
    clientSecret,
    signingKey: privateKey,
    kid,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
