/* global window */
// The page's only way to the control plane: same-origin requests with the session cookie.
import { noteAnswer } from "./partial.js";

// Sent on every request: the server refuses a cookie-authenticated change without it, and no
// cross-site page can add it.
export const CSRF_HEADERS = { "x-sigil-request": "1" };

let onSignedOut = () => undefined;

/** Called with the server's words when a request finds the session gone. */
export function whenSignedOut(handler) {
  onSignedOut = handler;
}

export async function getJson(url, init = {}) {
  const res = await window.fetch(url, {
    ...init,
    credentials: "same-origin",
    headers: { ...CSRF_HEADERS, ...init.headers },
  });
  const body = await res.json().catch(() => ({}));
  if (res.status === 401) {
    onSignedOut(body.error || "Sign in to continue.");
    throw new Error(body.error || "not signed in");
  }
  if (!res.ok) {
    const err = new Error(body.error || `${res.status} ${res.statusText}`);
    err.details = Array.isArray(body.errors) ? body.errors : [];
    throw err;
  }
  noteAnswer(new window.URL(url, window.location.href).pathname, body);
  return body;
}

export function postJson(url, body) {
  return getJson(url, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
}
