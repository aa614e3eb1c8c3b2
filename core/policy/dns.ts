/**
 * DNS names and HTTP hosts as policy patterns: `name.example` (exact) or `*.example` (exactly one more
 * label). Comparison is case-insensitive and ignores one trailing dot, because `API.local.` and `api.local`
 * reach the same server.
 */

const LABEL = /^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$/;

/** Returns why a name pattern is unusable, or null. */
export function dnsPatternProblem(pattern: string): string | null {
  const name = canonicalName(pattern);
  if (name.length === 0 || name.length > 253) return `"${pattern}" is not a DNS name (1-253 characters)`;
  const labels = name.split(".");
  const first = labels[0] === "*" ? 1 : 0;
  if (first === 1 && labels.length < 3)
    return `"${pattern}": a wildcard needs at least two labels after "*." (e.g. "*.example.com")`;
  for (let i = first; i < labels.length; i++) {
    const label = labels[i] ?? "";
    if (!LABEL.test(label))
      return label.includes("*")
        ? `"${pattern}": "*" is only allowed as the whole first label`
        : `"${pattern}": label "${label}" is not a valid DNS label`;
  }
  return null;
}

/** Lower-cases and drops one trailing dot. */
export function canonicalName(name: string): string {
  const lower = name.toLowerCase();
  return lower.endsWith(".") ? lower.slice(0, -1) : lower;
}

/** Reduces a Host header / authority to the bare host: lower case, no port, no trailing dot, no userinfo. */
export function canonicalHost(authority: string): string {
  let host = authority;
  const at = host.lastIndexOf("@");
  if (at >= 0) host = host.slice(at + 1);
  if (host.startsWith("[")) {
    const close = host.indexOf("]");
    return (close >= 0 ? host.slice(0, close + 1) : host).toLowerCase();
  }
  const colon = host.indexOf(":");
  if (colon >= 0) host = host.slice(0, colon);
  return canonicalName(host);
}

/** A compiled list of name patterns: exact names in a set, wildcard suffixes in another. */
export class NameMatcher {
  private readonly exact = new Set<string>();
  private readonly suffixes = new Set<string>();

  constructor(patterns: readonly string[]) {
    for (const p of patterns) {
      const name = canonicalName(p);
      if (name.startsWith("*.")) this.suffixes.add(name.slice(1));
      else this.exact.add(name);
    }
  }

  /** `name` must already be canonical (see canonicalName / canonicalHost). */
  matches(name: string): boolean {
    if (this.exact.has(name)) return true;
    if (this.suffixes.size === 0) return false;
    const dot = name.indexOf(".");
    return dot > 0 && this.suffixes.has(name.slice(dot));
  }
}
