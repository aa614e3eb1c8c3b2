/**
 * Path patterns: exact paths, `*` for exactly one segment and a trailing `/**` for a subtree. Patterns are
 * compiled once into a set of exact paths, a list of subtree prefixes and segment globs.
 */

/** Returns why a pattern is unusable, or null. Patterns must already be in normalized form. */
export function pathPatternProblem(pattern: string): string | null {
  if (!pattern.startsWith("/")) return `path "${pattern}" must start with "/"`;
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern.charCodeAt(i);
    if (c < 0x20 || c === 0x7f) return `path "${pattern}" contains a control character`;
  }
  for (const ch of ["%", "?", "#", "\\"]) {
    if (pattern.includes(ch))
      return `path "${pattern}" contains "${ch}"; write the decoded path without query or fragment`;
  }
  const segments = pattern.slice(1).split("/");
  for (let i = 0; i < segments.length; i++) {
    const seg = segments[i] as string;
    const last = i === segments.length - 1;
    if (seg === "" && !last) return `path "${pattern}" contains "//"`;
    if (seg === "." || seg === "..") return `path "${pattern}" contains a "${seg}" segment`;
    if (seg === "**" && !last) return `path "${pattern}": "**" is only allowed as the last segment`;
    if (seg.includes("*") && seg !== "*" && seg !== "**")
      return `path "${pattern}": "*" must be a whole segment ("/a/*/b"), not part of "${seg}"`;
  }
  return null;
}

interface SegmentGlob {
  /** null = any one non-empty segment */
  readonly segments: readonly (string | null)[];
  /** trailing `/**` */
  readonly subtree: boolean;
}

export class PathMatcher {
  private readonly exact = new Set<string>();
  private readonly prefixes: string[] = [];
  private readonly globs: SegmentGlob[] = [];
  private readonly everything: boolean;

  constructor(patterns: readonly string[]) {
    let everything = false;
    for (const p of patterns) {
      const segments = p.slice(1).split("/");
      const subtree = segments[segments.length - 1] === "**";
      if (subtree) segments.pop();
      if (!segments.includes("*")) {
        if (!subtree) this.exact.add(p);
        else if (segments.length === 0) everything = true;
        else this.prefixes.push("/" + segments.join("/"));
      } else {
        this.globs.push({ segments: segments.map((s) => (s === "*" ? null : s)), subtree });
      }
    }
    this.everything = everything;
  }

  /** `path` is a normalized path (or "*", which no pattern matches). */
  matches(path: string): boolean {
    if (path.charCodeAt(0) !== 0x2f) return false;
    if (this.everything || this.exact.has(path)) return true;
    for (const prefix of this.prefixes) {
      if (
        path.startsWith(prefix) &&
        (path.length === prefix.length || path.charCodeAt(prefix.length) === 0x2f)
      )
        return true;
    }
    if (this.globs.length === 0) return false;
    const parts = path.slice(1).split("/");
    for (const glob of this.globs) if (PathMatcher.globMatches(glob, parts)) return true;
    return false;
  }

  private static globMatches(glob: SegmentGlob, parts: readonly string[]): boolean {
    const n = glob.segments.length;
    if (glob.subtree ? parts.length < n : parts.length !== n) return false;
    for (let i = 0; i < n; i++) {
      const want = glob.segments[i];
      const got = parts[i] as string;
      if (want === null ? got === "" : want !== got) return false;
    }
    return true;
  }
}
