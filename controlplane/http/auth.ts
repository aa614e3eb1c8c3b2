import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import { z } from "zod";
import { HttpError, readJson, sendJson, type Router } from "./router.ts";
import type { SignInLimit } from "./sign-in-limit.ts";

/**
 * Authentication of the control plane's HTTP API. A caller proves it holds the admin token either
 * directly (`Authorization: Bearer <token>`: CLI, scripts, scrapers) or through a session the web
 * UI opened by posting the token to /api/session (an HttpOnly, SameSite=Strict cookie naming a
 * random session id kept here with its expiry). A request authenticated by cookie that can change
 * something must also carry `X-Sigil-Request: 1`, a header no cross-site form or simple request
 * can set.
 */

export const SESSION_COOKIE = "sigil_session";
export const CSRF_HEADER = "x-sigil-request";
const DEFAULT_SESSION_TTL_MS = 12 * 3600 * 1000;
const DEFAULT_MAX_SESSIONS = 1000;
const SAFE_METHODS = new Set(["GET", "HEAD", "OPTIONS"]);
const CHALLENGE = { "www-authenticate": 'Bearer realm="sigil"' };

export type Principal =
  | { readonly via: "bearer" }
  | { readonly via: "session"; readonly sessionKey: string; readonly expiresAt: number };

interface Session {
  readonly expiresAt: number;
  /** Answers still open under this session (event streams), ended with it. */
  readonly open: Set<ServerResponse>;
}

export interface HttpAuthOptions {
  readonly token: string;
  readonly sessionTtlMs?: number;
  /** Sessions kept at once; beyond it the oldest is signed out. */
  readonly maxSessions?: number;
  readonly now?: () => number;
}

export class HttpAuth {
  private readonly tokenDigest: Buffer;
  private readonly sessions = new Map<string, Session>();
  private readonly principals = new WeakMap<IncomingMessage, Principal>();
  private readonly ttlMs: number;
  private readonly maxSessions: number;
  private readonly now: () => number;
  private readonly sweeper: NodeJS.Timeout;

  constructor(options: HttpAuthOptions) {
    this.tokenDigest = digest(options.token);
    this.ttlMs = options.sessionTtlMs ?? DEFAULT_SESSION_TTL_MS;
    this.maxSessions = options.maxSessions ?? DEFAULT_MAX_SESSIONS;
    this.now = options.now ?? Date.now;
    // Expired sessions also end the event streams they opened, not only future requests.
    this.sweeper = setInterval(() => this.sweep(), Math.min(60_000, this.ttlMs));
    this.sweeper.unref();
  }

  /** Compares a presented token with the admin token in time independent of where they differ. */
  tokenMatches(presented: string): boolean {
    return timingSafeEqual(digest(presented), this.tokenDigest);
  }

  /** The Router's guard: establishes who is calling or throws 401 (no or bad credential) / 403 (no CSRF header). */
  readonly guard = (req: IncomingMessage, res: ServerResponse): void => {
    const principal = this.authenticate(req);
    if (principal.via === "session") {
      if (!SAFE_METHODS.has(req.method ?? "") && req.headers[CSRF_HEADER] !== "1")
        throw new HttpError(
          403,
          `a request signed in by cookie that changes state must carry ${CSRF_HEADER}: 1`,
        );
      const session = this.sessions.get(principal.sessionKey);
      session?.open.add(res);
      res.once("close", () => session?.open.delete(res));
    }
    this.principals.set(req, principal);
  };

  principalOf(req: IncomingMessage): Principal | undefined {
    return this.principals.get(req);
  }

  /** Opens a session for a caller that presented the admin token; returns the cookie value. */
  openSession(): { id: string; expiresAt: number } {
    this.sweep();
    while (this.sessions.size >= this.maxSessions) {
      const oldest = this.sessions.keys().next().value as string;
      this.endSession(oldest);
    }
    const id = randomBytes(32).toString("base64url");
    const expiresAt = this.now() + this.ttlMs;
    this.sessions.set(sessionKey(id), { expiresAt, open: new Set() });
    return { id, expiresAt };
  }

  /** Ends a session and every answer still streaming under it. */
  endSession(key: string, except?: ServerResponse): void {
    const session = this.sessions.get(key);
    if (!session) return;
    this.sessions.delete(key);
    for (const res of session.open) if (res !== except) res.destroy();
  }

  get sessionTtlMs(): number {
    return this.ttlMs;
  }

  close(): void {
    clearInterval(this.sweeper);
    for (const key of [...this.sessions.keys()]) this.endSession(key);
  }

  private authenticate(req: IncomingMessage): Principal {
    const authorization = req.headers.authorization;
    // A request that names a credential is judged by it alone, never by a fallback.
    if (authorization !== undefined) {
      const m = /^Bearer +(\S+) *$/i.exec(authorization);
      if (!m) throw unauthorized("the Authorization header is not of the form: Bearer <token>");
      if (!this.tokenMatches(m[1] as string))
        throw unauthorized("the bearer token is not the control plane's admin token");
      return { via: "bearer" };
    }
    const id = cookieValue(req.headers.cookie, SESSION_COOKIE);
    if (id === undefined)
      throw unauthorized("no credentials: send Authorization: Bearer <admin token>, or sign in to the UI");
    const key = sessionKey(id);
    const session = this.sessions.get(key);
    if (!session) throw unauthorized("the session is unknown or signed out; sign in again");
    if (session.expiresAt <= this.now()) {
      this.endSession(key);
      throw unauthorized("the session expired; sign in again");
    }
    return { via: "session", sessionKey: key, expiresAt: session.expiresAt };
  }

  private sweep(): void {
    const now = this.now();
    for (const [key, session] of this.sessions) if (session.expiresAt <= now) this.endSession(key);
  }
}

const SignIn = z.object({ token: z.string().max(4096) }).strict();

/**
 * `POST /api/session` (public: it checks the token itself, at most `limit` attempts per source) signs the UI in; `GET /api/session`
 * says how the caller is authenticated; `DELETE /api/session` signs the session out.
 */
export function registerSessionRoutes(
  router: Router,
  auth: HttpAuth,
  options: { readonly secure: boolean; readonly limit: SignInLimit },
): void {
  // On TLS the cookie is never sent over plain HTTP, where anyone on the path could read it.
  const attributes = `HttpOnly; SameSite=Strict; Path=/${options.secure ? "; Secure" : ""}`;
  router.addPublic("POST", "/api/session", async (req, res) => {
    const wait = options.limit.take(req.socket.remoteAddress ?? "");
    if (wait > 0)
      throw new HttpError(429, `too many sign-in attempts from this address; retry in ${wait} s`, {
        "retry-after": String(wait),
      });
    // The header keeps a cross-site form from signing a browser in with an attacker's token.
    if (req.headers[CSRF_HEADER] !== "1") throw new HttpError(403, `sign-in must carry ${CSRF_HEADER}: 1`);
    const parsed = SignIn.safeParse(await readJson(req, 8192));
    if (!parsed.success) throw new HttpError(400, 'sign-in body must be {"token": "<admin token>"}');
    if (!auth.tokenMatches(parsed.data.token))
      throw unauthorized("the token is not the control plane's admin token");
    const session = auth.openSession();
    res.setHeader(
      "set-cookie",
      `${SESSION_COOKIE}=${session.id}; ${attributes}; Max-Age=${Math.floor(auth.sessionTtlMs / 1000)}`,
    );
    sendJson(res, 200, { expiresAt: new Date(session.expiresAt).toISOString() });
  });
  router.add("GET", "/api/session", (req, res) => {
    const p = auth.principalOf(req);
    sendJson(res, 200, {
      via: p?.via,
      ...(p?.via === "session" ? { expiresAt: new Date(p.expiresAt).toISOString() } : {}),
    });
  });
  router.add("DELETE", "/api/session", (req, res) => {
    const p = auth.principalOf(req);
    if (p?.via === "session") auth.endSession(p.sessionKey, res);
    res.setHeader("set-cookie", `${SESSION_COOKIE}=; ${attributes}; Max-Age=0`);
    res.writeHead(204).end();
  });
}

function unauthorized(reason: string): HttpError {
  return new HttpError(401, reason, CHALLENGE);
}

function digest(text: string): Buffer {
  return createHash("sha256").update(text, "utf8").digest();
}

/** Sessions are kept under a hash of their id, so a lookup's timing says nothing about live ids. */
function sessionKey(id: string): string {
  return digest(id).toString("base64url");
}

function cookieValue(header: string | undefined, name: string): string | undefined {
  if (!header) return undefined;
  for (const part of header.split(";")) {
    const eq = part.indexOf("=");
    if (eq !== -1 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}
