import { createRemoteJWKSet } from "jose";
import type { JWTVerifyGetKey } from "jose";
import * as oidc from "openid-client";

/**
 * The organization's OpenID Connect provider, through openid-client: discovery from the issuer URL
 * (read on first need and again after a failure, so a provider that is down at start-up does not
 * stop the sidecar), the authorization request with PKCE, state and nonce, the code exchange, the
 * refresh grant and the end-session URL. Its signing keys are a jose remote JWKS: cached, and
 * fetched again when a token names a key id not seen yet (rotation), at most every 30 s.
 */

export class ProviderUnavailableError extends Error {}

/** The provider's HTTP requests give up after this long (seconds). */
const REQUEST_TIMEOUT_S = 10;

export interface ProviderSettings {
  readonly issuer: string;
  readonly clientId: string;
  readonly clientSecret?: string;
}

export interface SignInRequest {
  readonly redirectUri: string;
  readonly scopes: readonly string[];
  readonly state: string;
  readonly nonce: string;
  readonly codeVerifier: string;
}

export interface CodeExchange {
  readonly codeVerifier: string;
  readonly state: string;
  readonly nonce: string;
}

export interface ProviderTokens {
  readonly idToken: string;
  readonly refreshToken?: string;
}

function remoteKeys(uri: string): JWTVerifyGetKey {
  return createRemoteJWKSet(new URL(uri), {
    timeoutDuration: REQUEST_TIMEOUT_S * 1000,
    cooldownDuration: 30_000,
    cacheMaxAge: 600_000,
  });
}

export class OpenIdProvider {
  private discovered: Promise<{ config: oidc.Configuration; keys: JWTVerifyGetKey }> | null = null;

  constructor(private readonly settings: ProviderSettings) {}

  get issuer(): string {
    return this.settings.issuer;
  }

  private discover(): Promise<{ config: oidc.Configuration; keys: JWTVerifyGetKey }> {
    if (this.discovered !== null) return this.discovered;
    const { issuer, clientId, clientSecret } = this.settings;
    const insecure = new URL(issuer).protocol === "http:";
    const found = oidc
      .discovery(
        new URL(issuer),
        clientId,
        undefined,
        clientSecret === undefined ? oidc.None() : oidc.ClientSecretBasic(clientSecret),
        { execute: insecure ? [oidc.allowInsecureRequests] : [], timeout: REQUEST_TIMEOUT_S },
      )
      .then((config) => {
        const jwksUri = config.serverMetadata().jwks_uri;
        if (jwksUri === undefined) throw new Error("the discovery document has no jwks_uri");
        return { config, keys: remoteKeys(jwksUri) };
      })
      .catch((err: unknown) => {
        this.discovered = null;
        throw new ProviderUnavailableError(`discovery of ${issuer} failed: ${(err as Error).message}`);
      });
    this.discovered = found;
    return found;
  }

  /** The key set ID tokens (and the provider's bearer tokens) are verified against. */
  async keys(): Promise<JWTVerifyGetKey> {
    return (await this.discover()).keys;
  }

  async authorizationUrl(r: SignInRequest): Promise<URL> {
    const { config } = await this.discover();
    return oidc.buildAuthorizationUrl(config, {
      redirect_uri: r.redirectUri,
      scope: r.scopes.join(" "),
      state: r.state,
      nonce: r.nonce,
      code_challenge: await oidc.calculatePKCECodeChallenge(r.codeVerifier),
      code_challenge_method: "S256",
    });
  }

  /**
   * Exchanges the code of a callback URL. openid-client checks the response's state and the ID
   * token's claims; the caller verifies the ID token's signature (`verifyIdToken`).
   */
  async exchange(callback: URL, x: CodeExchange): Promise<ProviderTokens> {
    const { config } = await this.discover();
    const tokens = await oidc.authorizationCodeGrant(config, callback, {
      pkceCodeVerifier: x.codeVerifier,
      expectedState: x.state,
      expectedNonce: x.nonce,
      idTokenExpected: true,
    });
    return withRefresh(tokens.id_token as string, tokens.refresh_token);
  }

  /** A refresh grant; the provider must answer with a new ID token, or the session ends. */
  async refresh(refreshToken: string): Promise<ProviderTokens> {
    const { config } = await this.discover();
    const tokens = await oidc.refreshTokenGrant(config, refreshToken);
    if (tokens.id_token === undefined) throw new Error("the refresh answer has no ID token");
    return withRefresh(tokens.id_token, tokens.refresh_token ?? refreshToken);
  }

  /** The provider's sign-out URL, or null when it has none. */
  async endSessionUrl(postLogoutRedirectUri: string): Promise<URL | null> {
    const { config } = await this.discover();
    if (config.serverMetadata().end_session_endpoint === undefined) return null;
    return oidc.buildEndSessionUrl(config, {
      client_id: this.settings.clientId,
      post_logout_redirect_uri: postLogoutRedirectUri,
    });
  }
}

function withRefresh(idToken: string, refreshToken: string | undefined): ProviderTokens {
  return refreshToken === undefined ? { idToken } : { idToken, refreshToken };
}
