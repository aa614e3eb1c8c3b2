/**
 * A person signs in to a web application through its sidecar: a real headless Chromium, a real
 * OpenID Connect provider (oidc-provider) and the sidecar's user-access port in between. The app
 * never sees a request without a verified user, learns who it is from x-sigil-user*, and the admin
 * path is decided by a policy on the user's groups.
 */
import { chromium } from "playwright-core";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { UserAccessLab } from "../support/user-access.ts";
import { startUserAccessLab } from "../support/user-access.ts";

let lab: UserAccessLab;
let browser: Browser;

beforeAll(async () => {
  lab = await startUserAccessLab();
  browser = await chromium.launch({ executablePath: "/usr/bin/chromium", args: ["--no-sandbox"] });
}, 60_000);

afterAll(async () => {
  await browser?.close();
  await lab?.close();
});

const SESSION = "__Host-sigil-session";

/**
 * Goes to `path` on the app and answers the provider's pages (login form, consent) as `login` until
 * the browser is back on the app. At most a few pages: a loop would be a failure.
 */
async function visitSignedIn(page: Page, path: string, login: string): Promise<void> {
  await page.goto(lab.origin + path);
  for (let step = 0; step < 4 && !page.url().startsWith(lab.origin); step++) {
    const form = page.locator('input[name="login"]');
    if ((await form.count()) > 0) {
      await form.fill(login);
      await page.locator('input[name="password"]').fill("any password");
      await Promise.all([page.waitForNavigation(), page.locator("button[type=submit]").click()]);
    } else {
      await Promise.all([page.waitForNavigation(), page.locator("button[type=submit]").first().click()]);
    }
  }
  expect(page.url().startsWith(lab.origin)).toBe(true);
}

async function freshPage(): Promise<{ context: BrowserContext; page: Page }> {
  const context = await browser.newContext();
  // The provider's pages import a web font; nothing off this machine is reachable, so fail it at once.
  await context.route(/^https?:\/\/(?!localhost[:/]|127\.0\.0\.1[:/])/, (route) => route.abort());
  return { context, page: await context.newPage() };
}

/** Path and query of every request the page makes under `prefix`, as they happen. */
function pathsVisitedAt(page: Page, prefix: string): string[] {
  const visits: string[] = [];
  page.on("request", (r) => {
    if (!r.url().startsWith(prefix)) return;
    const url = new URL(r.url());
    visits.push(url.pathname + url.search);
  });
  return visits;
}

function lastSeen(path: string): Record<string, string | string[] | undefined> {
  const seen = lab.app.seen.filter((r) => r.url === path).at(-1);
  if (seen === undefined) throw new Error(`the app never saw ${path}`);
  return seen.headers;
}

describe("sign-in offload in a browser", () => {
  it("sends a new visitor to the provider and lands them on the app with the user fields", async () => {
    const { context, page } = await freshPage();
    await page.goto(`${lab.origin}/app/home`);
    expect(page.url().startsWith(`${lab.provider.issuer}/`)).toBe(true);
    expect(lab.app.seen.some((r) => r.url === "/app/home")).toBe(false);
    await visitSignedIn(page, "/app/home", "alice");
    expect(new URL(page.url()).pathname).toBe("/app/home");
    const headers = lastSeen("/app/home");
    expect(headers["x-sigil-user"]).toBe("alice");
    expect(headers["x-sigil-user-email"]).toBe("alice@example.test");
    expect(headers["x-sigil-user-groups"]).toBe("staff,payments-admins");
    expect(headers["x-sigil-user-issuer"]).toBe(lab.provider.issuer);
    const cookie = (await context.cookies(lab.origin)).find((c) => c.name === SESSION);
    expect(cookie).toMatchObject({ httpOnly: true, secure: true, sameSite: "Lax" });
    const flow = await lab.flows.next((r) => r.http?.path === "/app/home" && r.verdict === "allow");
    expect(flow.source.user).toEqual({ issuer: lab.provider.issuer, sub: "alice" });
    expect(flow.policy).toBe("web-people/ingress/1");
    await context.close();
  });

  it("lets the admin group in to /admin and shows the other user a 403 page, not a sign-in loop", async () => {
    const alice = await freshPage();
    await visitSignedIn(alice.page, "/admin", "alice");
    expect(lastSeen("/admin")["x-sigil-user"]).toBe("alice");
    await alice.context.close();

    const bob = await freshPage();
    await visitSignedIn(bob.page, "/app/home", "bob");
    const seenBefore = lab.app.seen.length;
    const response = await bob.page.goto(`${lab.origin}/admin`);
    expect(response?.status()).toBe(403);
    expect(bob.page.url()).toBe(`${lab.origin}/admin`);
    expect(await bob.page.locator("h1").textContent()).toBe("Access denied");
    expect(lab.app.seen.length).toBe(seenBefore);
    const flow = await lab.flows.next((r) => r.http?.path === "/admin" && r.source.user?.sub === "bob");
    expect(flow).toMatchObject({ verdict: "deny", policy: null, http: { status: 403 } });
    await bob.context.close();
  });

  it("signs out here and at the provider; the next visit signs in again", async () => {
    const { context, page } = await freshPage();
    await visitSignedIn(page, "/app/home", "alice");
    await page.goto(`${lab.origin}/.sigil/sign-out`);
    expect((await context.cookies(lab.origin)).some((c) => c.name === SESSION)).toBe(false);
    // The provider asks to confirm, then sends the browser back to the app, which wants a sign-in.
    expect(page.url().startsWith(lab.provider.issuer)).toBe(true);
    await Promise.all([
      page.waitForURL((u) => u.href.includes("/interaction/")),
      page.locator("button[value=yes]").click(),
    ]);
    expect(await page.locator('input[name="login"]').count()).toBe(1);
    await context.close();
  });

  it("sends an expired session back to sign-in (the session clock moved past its lifetime)", async () => {
    const { context, page } = await freshPage();
    await visitSignedIn(page, "/app/home", "bob");
    const providerVisits = pathsVisitedAt(page, lab.provider.issuer);
    lab.clock.offsetMs = 9 * 3600 * 1000;
    try {
      await visitSignedIn(page, "/app/orders", "bob");
    } finally {
      lab.clock.offsetMs = 0;
    }
    expect(providerVisits[0]).toMatch(/^\/auth\?/);
    expect(lastSeen("/app/orders")["x-sigil-user"]).toBe("bob");
    await context.close();
  });

  it("refreshes a session whose ID token has expired with its refresh token, without a visit to the provider", async () => {
    const { context, page } = await freshPage();
    await visitSignedIn(page, "/app/home", "alice");
    const providerVisits = pathsVisitedAt(page, lab.provider.issuer);
    const before = (await context.cookies(lab.origin)).find((c) => c.name === SESSION)?.value;
    lab.clock.offsetMs = 2 * 3600 * 1000;
    try {
      const response = await page.goto(`${lab.origin}/app/refreshed`);
      expect(response?.status()).toBe(200);
    } finally {
      lab.clock.offsetMs = 0;
    }
    expect(providerVisits).toEqual([]);
    expect(lastSeen("/app/refreshed")["x-sigil-user"]).toBe("alice");
    const after = (await context.cookies(lab.origin)).find((c) => c.name === SESSION)?.value;
    expect(after).not.toBe(before);
    await lab.flows.next(
      (r) => r.reason === "user-access: session refreshed" && r.source.user?.sub === "alice",
    );
    await context.close();
  });

  it("returns only to a path on the app's origin after sign-in, whatever the first request named", async () => {
    const { context, page } = await freshPage();
    await visitSignedIn(page, "//evil.example/steal", "alice");
    expect(new URL(page.url()).origin).toBe(lab.origin);
    expect(new URL(page.url()).pathname).toBe("/");
    await context.close();
  });

  it("refuses a callback with a tampered state, and a callback replayed after the sign-in completed", async () => {
    const { context, page } = await freshPage();
    const callbacks = pathsVisitedAt(page, `${lab.origin}/.sigil/callback`);
    await visitSignedIn(page, "/app/home", "alice");
    const used = lab.origin + (callbacks[0] as string);
    const replay = await context.request.get(used, { maxRedirects: 0 });
    expect(replay.status()).toBe(400);
    expect(await replay.text()).toContain("no sign-in in progress");

    // A new sign-in is pending in this browser; a callback naming another state cannot finish it.
    await context.clearCookies();
    const start = await context.request.get(`${lab.origin}/app/home`, {
      headers: { accept: "text/html" },
      maxRedirects: 0,
    });
    expect(start.status()).toBe(302);
    const tampered = new URL(used);
    tampered.searchParams.set("state", "attacker-chosen-state");
    const answer = await context.request.get(tampered.href, { maxRedirects: 0 });
    expect(answer.status()).toBe(400);
    expect(await answer.text()).toContain("state in the callback is not the one this sign-in sent");
    expect((await context.cookies(lab.origin)).some((c) => c.name === SESSION)).toBe(false);
    await context.close();
  });
});
