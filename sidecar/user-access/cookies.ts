/** Reading the Cookie field and writing Set-Cookie for the sidecar's own cookies (RFC 6265). */

export interface CookieSettings {
  readonly secure: boolean;
}

/** The value of the first cookie called `name` in the request's Cookie fields, or undefined. */
export function cookieValue(field: string | readonly string[] | undefined, name: string): string | undefined {
  if (field === undefined) return undefined;
  const fields = typeof field === "string" ? [field] : field;
  for (const f of fields) {
    for (const part of f.split(";")) {
      const eq = part.indexOf("=");
      if (eq < 0) continue;
      if (part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
    }
  }
  return undefined;
}

/** A cookie only the sidecar reads: HttpOnly, SameSite=Lax (sent on the provider's redirect back), Path=/. */
export function setCookie(name: string, value: string, maxAgeSeconds: number, s: CookieSettings): string {
  return (
    `${name}=${value}; Path=/; Max-Age=${maxAgeSeconds}; HttpOnly; SameSite=Lax` +
    (s.secure ? "; Secure" : "")
  );
}

export function clearCookie(name: string, s: CookieSettings): string {
  return setCookie(name, "", 0, s);
}
