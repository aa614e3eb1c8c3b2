/**
 * Where a person goes after signing in: only a path on this same origin. A target such as
 * `//evil.example/` or `/\evil.example` is a path to the sidecar's parser but a host to a browser
 * reading it from Location, so anything that is not one `/` followed by a path character falls back
 * to `/`; so does anything with control characters or a backslash.
 */
export function safeReturnPath(target: string): string {
  if (!target.startsWith("/") || target.startsWith("//")) return "/";
  for (const c of target) {
    const code = c.charCodeAt(0);
    if (code <= 0x20 || code === 0x7f || c === "\\") return "/";
  }
  // A browser resolving it against any origin must stay on that origin.
  const resolved = new URL(target, "http://origin.invalid");
  if (resolved.origin !== "http://origin.invalid") return "/";
  return resolved.pathname + resolved.search;
}
