import type { JWTPayload } from "jose";
import * as oidc from "openid-client";
import type { Logger } from "pino";
import type { UserIdentity } from "../../core/user.ts";
import { userFromClaims } from "./claims.ts";
import type { UserAccessConfig } from "./config.ts";
import { clearCookie, cookieValue, setCookie } from "./cookies.ts";
import type { Answer } from "./pages.ts";
import { page, redirect } from "./pages.ts";
import type { OpenIdProvider } from "./provider.ts";
import { safeReturnPath } from "./return-path.ts";
import type { SealedCookies } from "./session.ts";
import { verifyIdToken } from "./tokens.ts";

/**
 * The browser's side of sign-in: sending a person to the provider, the callback that turns the
 * provider's answer into a session, refreshing a session, and signing out. A sign-in in progress is
 * a sealed cookie (state, nonce, PKCE verifier, where to return) that lives ten minutes and is
 * removed by the callback whatever its outcome, so a callback URL replayed later finds nothing to
 * complete. A failed callback is a page, never another redirect, so it cannot loop.
 */

const SIGN_IN_LIFETIME_S = 600;

export interface SignInOutcome {
  readonly answer: Answer;
  /** Set when the callback established a session. */
  readonly user: UserIdentity | null;
  /** Why the callback failed, for the flow record; null on success. */
  readonly problem: string | null;
}

interface SessionClaims {
  readonly usr: UserIdentity;
  /**
   * When the ID token the session rests on has lived its lifetime, by the session clock (s):
   * refreshed after that when possible.
   */
  readonly ref: number;
  readonly rt?: string;
}

/** How long a verified token lives (`exp` and `iat` are required claims). */
function tokenLifetime(claims: JWTPayload): number {
  return Math.max(0, (claims.exp as number) - (claims.iat as number));
}

/** An OAuth error answer names its code and description; anything else its message. */
function providerError(err: unknown): string {
  const e = err as { message: string; error?: unknown; error_description?: unknown };
  if (typeof e.error !== "string") return e.message;
  return typeof e.error_description === "string" ? `${e.error}: ${e.error_description}` : e.error;
}

function isUser(value: unknown): value is UserIdentity {
  const u = value as UserIdentity;
  return (
    typeof value === "object" &&
    value !== null &&
    typeof u.issuer === "string" &&
    typeof u.sub === "string" &&
    Array.isArray(u.groups)
  );
}

export class SignIn {
  private readonly loginCookie: string;
  private readonly callbackPath: string;

  constructor(
    private readonly config: UserAccessConfig,
    private readonly provider: OpenIdProvider,
    private readonly sealed: SealedCookies,
    private readonly log: Logger,
  ) {
    this.loginCookie = `${config.cookie.name}-sign-in`;
    this.callbackPath = new URL(config.redirectUri).pathname;
  }

  isCallback(path: string): boolean {
    return path === this.callbackPath;
  }

  /** Redirects to the provider; `target` (this request's) is where the person comes back to. */
  async start(target: string): Promise<Answer> {
    const state = oidc.randomState();
    const nonce = oidc.randomNonce();
    const codeVerifier = oidc.randomPKCECodeVerifier();
    const url = await this.provider.authorizationUrl({
      redirectUri: this.config.redirectUri,
      scopes: this.config.scopes,
      state,
      nonce,
      codeVerifier,
    });
    const sealed = await this.sealed.seal(
      "sigil-sign-in",
      { state, nonce, cv: codeVerifier, ret: safeReturnPath(target) },
      SIGN_IN_LIFETIME_S,
    );
    return redirect(302, url.href, [
      setCookie(this.loginCookie, sealed, SIGN_IN_LIFETIME_S, this.config.cookie),
    ]);
  }

  /**
   * The provider sent the browser back with a code (or an error). `received` is the request's URL;
   * only its query counts: the code is exchanged for the registered redirect URI.
   */
  async callback(received: URL, cookies: string | readonly string[] | undefined): Promise<SignInOutcome> {
    const url = new URL(this.config.redirectUri);
    url.search = received.search;
    const clear = clearCookie(this.loginCookie, this.config.cookie);
    const fail = (status: 400 | 403 | 502, problem: string): SignInOutcome => ({
      answer: page(status, "Sign-in failed", problem, [clear], { href: "/", text: "Start again" }),
      user: null,
      problem,
    });
    const raw = cookieValue(cookies, this.loginCookie);
    const pending = raw === undefined ? null : await this.sealed.open("sigil-sign-in", raw);
    if (pending === null)
      return fail(400, "no sign-in in progress in this browser (expired, or already completed)");
    const error = url.searchParams.get("error");
    if (error !== null) return fail(403, `the identity provider refused: ${error}`);
    if (url.searchParams.get("state") !== pending.state)
      return fail(400, "the state in the callback is not the one this sign-in sent");
    const nonce = String(pending.nonce);
    let idToken: string;
    let refreshToken: string | undefined;
    try {
      ({ idToken, refreshToken } = await this.provider.exchange(url, {
        codeVerifier: String(pending.cv),
        state: String(pending.state),
        nonce,
      }));
    } catch (err) {
      return fail(400, `the code exchange failed: ${providerError(err)}`);
    }
    let user: UserIdentity;
    let lifetime: number;
    try {
      const claims = await verifyIdToken(idToken, {
        keys: await this.provider.keys(),
        issuer: this.provider.issuer,
        clientId: this.config.clientId,
        nonce,
      });
      user = userFromClaims(claims, this.config.claims);
      lifetime = tokenLifetime(claims);
    } catch (err) {
      return fail(400, `the ID token was refused: ${(err as Error).message}`);
    }
    const cookie = await this.sessionCookie(user, lifetime, refreshToken);
    this.log.info({ sub: user.sub, issuer: user.issuer }, "user signed in");
    return {
      answer: redirect(302, safeReturnPath(String(pending.ret)), [clear, cookie]),
      user,
      problem: null,
    };
  }

  /**
   * Set-Cookie for a session over an ID token that lives `lifetime` seconds. A refreshed session
   * keeps the end of the one it replaces (`end`, seconds): refreshing never extends `maxAgeSeconds`.
   */
  async sessionCookie(
    user: UserIdentity,
    lifetime: number,
    refreshToken: string | undefined,
    end: number = this.sealed.seconds() + this.config.cookie.maxAgeSeconds,
  ): Promise<string> {
    const ref = this.sealed.seconds() + lifetime;
    const claims: SessionClaims =
      refreshToken === undefined ? { usr: user, ref } : { usr: user, ref, rt: refreshToken };
    const remaining = Math.max(1, end - this.sealed.seconds());
    const value = await this.sealed.seal("sigil-session", { ...claims }, remaining);
    return setCookie(this.config.cookie.name, value, remaining, this.config.cookie);
  }

  /**
   * The session a request carries: its user, and a fresh Set-Cookie when the session was refreshed.
   * Null when there is none, it is forged or expired, or its refresh was refused.
   */
  async session(
    cookies: string | readonly string[] | undefined,
  ): Promise<{ user: UserIdentity; refreshed: string | null } | null> {
    const raw = cookieValue(cookies, this.config.cookie.name);
    if (raw === undefined) return null;
    const claims = await this.sealed.open("sigil-session", raw);
    if (claims === null || !isUser(claims.usr) || typeof claims.ref !== "number") return null;
    const user = claims.usr;
    if (claims.ref > this.sealed.seconds() || typeof claims.rt !== "string") return { user, refreshed: null };
    try {
      const tokens = await this.provider.refresh(claims.rt);
      const fresh = await verifyIdToken(tokens.idToken, {
        keys: await this.provider.keys(),
        issuer: this.provider.issuer,
        clientId: this.config.clientId,
        nonce: null,
      });
      const renewed = userFromClaims(fresh, this.config.claims);
      return {
        user: renewed,
        refreshed: await this.sessionCookie(
          renewed,
          tokenLifetime(fresh),
          tokens.refreshToken,
          claims.exp as number,
        ),
      };
    } catch (err) {
      this.log.info(
        { sub: user.sub, err: (err as Error).message },
        "session refresh refused; signing in again",
      );
      return null;
    }
  }

  /** Sends the browser to repeat its request (any method, body included) with the refreshed session. */
  repeat(target: string, cookie: string): Answer {
    return redirect(307, safeReturnPath(target), [cookie]);
  }

  /** Ends the session here, then at the provider when it offers a sign-out endpoint. */
  async signOut(): Promise<Answer> {
    const clear = clearCookie(this.config.cookie.name, this.config.cookie);
    const back = this.config.postLogoutRedirectUri ?? new URL("/", this.config.redirectUri).href;
    let url: URL | null = null;
    try {
      url = await this.provider.endSessionUrl(back);
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, "provider sign-out URL unavailable");
    }
    if (url === null) return page(200, "Signed out", "You are signed out of this application.", [clear]);
    return redirect(302, url.href, [clear]);
  }
}
