/**
 * Attacks on a user-access port, each against the real thing: the sidecar in front of an app, the
 * real provider's JWKS, tokens minted by the test with the provider's own key (accepted) and with
 * every wrong thing an attacker can vary (refused). A request refused here never reaches the app.
 */
import { readFile } from "node:fs/promises";
import http2 from "node:http2";
import { SignJWT, createRemoteJWKSet, generateKeyPair } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SealedCookies, parseSessionKey } from "../../sidecar/user-access/session.ts";
import { TokenError, verifyIdToken } from "../../sidecar/user-access/tokens.ts";
import type { UserAccessLab } from "../support/user-access.ts";
import { startUserAccessLab } from "../support/user-access.ts";

let lab: UserAccessLab;
let sessionKey: Uint8Array;

beforeAll(async () => {
  lab = await startUserAccessLab();
  sessionKey = parseSessionKey(await readFile(lab.sessionKeyFile, "utf8"), lab.sessionKeyFile);
}, 60_000);

afterAll(async () => {
  await lab?.close();
});

const SESSION = "__Host-sigil-session";
const now = (): number => Math.floor(Date.now() / 1000);

interface Mint {
  readonly sub?: string;
  readonly groups?: readonly string[];
  readonly aud?: string;
  readonly iss?: string;
  readonly exp?: number;
  readonly nonce?: string;
  readonly key?: Parameters<SignJWT["sign"]>[0];
  readonly alg?: string;
}

/** A JWT as the provider would sign it, with whatever the attack changes. */
function mint(m: Mint = {}): Promise<string> {
  const claims: Record<string, unknown> = {
    email: `${m.sub ?? "bob"}@example.test`,
    email_verified: true,
    groups: [...(m.groups ?? ["staff"])],
  };
  if (m.nonce !== undefined) claims.nonce = m.nonce;
  return new SignJWT(claims)
    .setProtectedHeader({ alg: m.alg ?? "RS256", kid: lab.provider.kid })
    .setSubject(m.sub ?? "bob")
    .setIssuer(m.iss ?? lab.provider.issuer)
    .setAudience(m.aud ?? lab.provider.clientId)
    .setIssuedAt(now() - 60)
    .setExpirationTime(m.exp ?? now() + 600)
    .sign(m.key ?? lab.provider.signingKey);
}

function get(path: string, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(lab.origin + path, { headers, redirect: "manual" });
}

/** Whether the app received a request for `path` while `action` ran. */
async function reachesApp(
  path: string,
  action: () => Promise<Response>,
): Promise<{ status: number; reached: boolean }> {
  const before = lab.app.seen.filter((r) => r.url === path).length;
  const res = await action();
  await res.arrayBuffer();
  return { status: res.status, reached: lab.app.seen.filter((r) => r.url === path).length > before };
}

describe("bearer tokens", () => {
  it("accepts the provider's own token and names its subject to the app", async () => {
    const outcome = await reachesApp("/app/bearer", async () =>
      get("/app/bearer", { authorization: `Bearer ${await mint()}` }),
    );
    expect(outcome).toEqual({ status: 200, reached: true });
    expect(lab.app.seen.at(-1)?.headers["x-sigil-user"]).toBe("bob");
  });

  it.each([
    [
      "signed by another key under the provider's key id",
      async () => mint({ key: (await generateKeyPair("RS256")).privateKey }),
    ],
    ["for another audience", () => mint({ aud: "some-other-client" })],
    ["expired", () => mint({ exp: now() - 3600 })],
    ["from an issuer nobody trusts", () => mint({ iss: "https://idp.attacker.example" })],
    [
      "HMAC-signed with the client secret",
      () => mint({ alg: "HS256", key: new TextEncoder().encode(lab.provider.clientSecret) }),
    ],
  ])("refuses a token %s with 401", async (_name, token) => {
    const t = await token();
    const outcome = await reachesApp("/app/bearer", () =>
      get("/app/bearer", { authorization: `Bearer ${t}` }),
    );
    expect(outcome).toEqual({ status: 401, reached: false });
  });

  it("refuses alg none, and records why", async () => {
    const part = (o: object): string => Buffer.from(JSON.stringify(o)).toString("base64url");
    const unsigned = `${part({ alg: "none" })}.${part({ sub: "alice", iss: lab.provider.issuer, aud: lab.provider.clientId, exp: now() + 600, groups: ["payments-admins"] })}.`;
    const outcome = await reachesApp("/admin", () => get("/admin", { authorization: `Bearer ${unsigned}` }));
    expect(outcome).toEqual({ status: 401, reached: false });
    const flow = await lab.flows.next((r) => r.reason.includes('token algorithm "none" is refused'));
    expect(flow.verdict).toBe("deny");
  });
});

describe("ID tokens at the callback", () => {
  const keys = (): ReturnType<typeof createRemoteJWKSet> =>
    createRemoteJWKSet(new URL(`${lab.provider.issuer}/jwks`));
  const check = (nonce: string) => ({
    keys: keys(),
    issuer: lab.provider.issuer,
    clientId: lab.provider.clientId,
    nonce,
  });

  it("verifies one signed by the provider for this sign-in's nonce", async () => {
    const claims = await verifyIdToken(await mint({ nonce: "n-1" }), check("n-1"));
    expect(claims.sub).toBe("bob");
  });

  it.each([
    [
      "signed by another key",
      async () => mint({ nonce: "n-1", key: (await generateKeyPair("RS256")).privateKey }),
      /signature verification failed/,
    ],
    ["for another audience", () => mint({ nonce: "n-1", aud: "another-client" }), /aud/],
    ["expired", () => mint({ nonce: "n-1", exp: now() - 3600 }), /exp/],
    ["minted for another sign-in (replayed nonce)", () => mint({ nonce: "n-0" }), /nonce does not match/],
    ["without a nonce", () => mint(), /nonce does not match/],
  ])("refuses one %s", async (_name, token, reason) => {
    const t = await token();
    await expect(verifyIdToken(t, check("n-1"))).rejects.toThrow(TokenError);
    await expect(verifyIdToken(t, check("n-1"))).rejects.toThrow(reason);
  });
});

describe("sessions", () => {
  const user = {
    issuer: "",
    sub: "alice",
    email: "alice@example.test",
    emailVerified: true,
    groups: ["payments-admins"],
  };

  async function sessionCookie(key: Uint8Array, purpose: "sigil-session" | "sigil-sign-in"): Promise<string> {
    const sealed = new SealedCookies(key, Date.now);
    const value = await sealed.seal(
      purpose,
      { usr: { ...user, issuer: lab.provider.issuer }, ref: now() + 600 },
      600,
    );
    return `${SESSION}=${value}`;
  }

  it("accepts a cookie sealed with the session key (what the callback sets)", async () => {
    const cookie = await sessionCookie(sessionKey, "sigil-session");
    expect(await reachesApp("/admin", () => get("/admin", { cookie }))).toEqual({
      status: 200,
      reached: true,
    });
  });

  it.each([
    ["sealed with another key", async () => sessionCookie(new Uint8Array(32).fill(7), "sigil-session")],
    ["that is a sign-in transaction, not a session", () => sessionCookie(sessionKey, "sigil-sign-in")],
    ["made up", () => Promise.resolve(`${SESSION}=eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2R0NNIn0..AAAA.BBBB.CCCC`)],
  ])("sends a browser with a cookie %s to sign in, and a program gets 401", async (_name, forged) => {
    const cookie = await forged();
    const page = await reachesApp("/admin", () => get("/admin", { cookie, accept: "text/html" }));
    expect(page).toEqual({ status: 302, reached: false });
    const api = await reachesApp("/admin", () => get("/admin", { cookie }));
    expect(api).toEqual({ status: 401, reached: false });
  });
});

describe("the user fields", () => {
  it("removes every client-sent spelling and sets the verified user's, so a header cannot claim a group", async () => {
    const forged = {
      "X-Sigil-User": "alice",
      x_sigil_user_groups: "payments-admins",
      "X-SIGIL-USER-EMAIL": "alice@example.test",
    };
    const token = await mint({ sub: "bob" });
    const admin = await reachesApp("/admin", () =>
      get("/admin", { ...forged, authorization: `Bearer ${token}` }),
    );
    expect(admin).toEqual({ status: 403, reached: false });
    const page = await reachesApp("/app/fields", () =>
      get("/app/fields", { ...forged, authorization: `Bearer ${token}` }),
    );
    expect(page).toEqual({ status: 200, reached: true });
    const headers = lab.app.seen.at(-1)?.headers ?? {};
    expect(headers["x-sigil-user"]).toBe("bob");
    expect(headers["x-sigil-user-email"]).toBe("bob@example.test");
    expect(headers["x-sigil-user-groups"]).toBe("staff");
    expect(headers.x_sigil_user_groups).toBeUndefined();
  });
});

describe("other ways in", () => {
  it("refuses HTTP/2 in the clear on a user-access port rather than pass it without a user", async () => {
    const session = http2.connect(lab.origin);
    session.on("error", () => undefined);
    const stream = session.request({ ":path": "/app/h2", authorization: `Bearer ${await mint()}` });
    stream.on("error", () => undefined);
    // The refusal is a reset: wait for the close, whatever error comes first (once() would reject on it).
    await new Promise((resolve) => session.on("close", resolve));
    expect(lab.app.seen.some((r) => r.url === "/app/h2")).toBe(false);
    const flow = await lab.flows.next((r) => r.reason.includes("serves people over HTTP/1.1 only"));
    expect(flow.verdict).toBe("deny");
  });
});
