import type { FlowRecord } from "../../core/flow.ts";

/** Distinct request paths kept per edge; the rest are counted in `otherPaths`. */
export const MAX_PATHS_PER_EDGE = 256;

/** The counts of one group of flow records: verdicts, encryption, protocols, methods and paths. */
export interface TallyView {
  readonly allowed: number;
  readonly denied: number;
  /** Let through in observe mode, but enforce mode would have denied it. */
  readonly wouldDeny: number;
  readonly encrypted: number;
  readonly plaintext: number;
  readonly protocols: Readonly<Record<string, number>>;
  readonly methods: Readonly<Record<string, number>>;
  /** Distinct request paths seen, at most MAX_PATHS_PER_EDGE; the rest are counted in otherPaths. */
  readonly paths: Readonly<Record<string, number>>;
  readonly otherPaths: number;
}

function bump(map: Record<string, number>, key: string, by: number): void {
  const next = (map[key] ?? 0) + by;
  if (next <= 0) delete map[key];
  else map[key] = next;
}

/** Counts kept exactly under add and remove, so retention can take records back out. */
export class Tally {
  allowed = 0;
  denied = 0;
  wouldDeny = 0;
  encrypted = 0;
  plaintext = 0;
  otherPaths = 0;
  readonly protocols: Record<string, number> = {};
  readonly methods: Record<string, number> = {};
  readonly paths: Record<string, number> = {};

  get total(): number {
    return this.allowed + this.denied + this.wouldDeny;
  }

  /** Adds another group's counts (the same edge's reports kept by another replica). */
  add(v: TallyView): void {
    this.allowed += v.allowed;
    this.denied += v.denied;
    this.wouldDeny += v.wouldDeny;
    this.encrypted += v.encrypted;
    this.plaintext += v.plaintext;
    this.otherPaths += v.otherPaths;
    for (const [k, n] of Object.entries(v.protocols)) bump(this.protocols, k, n);
    for (const [k, n] of Object.entries(v.methods)) bump(this.methods, k, n);
    for (const [k, n] of Object.entries(v.paths)) {
      if (k in this.paths || Object.keys(this.paths).length < MAX_PATHS_PER_EDGE) bump(this.paths, k, n);
      else this.otherPaths += n;
    }
  }

  count(r: FlowRecord, by: 1 | -1): void {
    if (r.verdict === "deny") this.denied += by;
    else if (r.wouldDeny) this.wouldDeny += by;
    else this.allowed += by;
    if (r.encrypted) this.encrypted += by;
    else this.plaintext += by;
    bump(this.protocols, r.protocol, by);
    if (!r.http) return;
    bump(this.methods, r.http.method, by);
    if (r.http.path in this.paths || (by > 0 && Object.keys(this.paths).length < MAX_PATHS_PER_EDGE)) {
      bump(this.paths, r.http.path, by);
    } else {
      this.otherPaths = Math.max(0, this.otherPaths + by);
    }
  }
}

/** The sum of several tallies, as one view (paths past the limit are counted in `otherPaths`). */
export function sumTallies(tallies: readonly Tally[]): Tally {
  const sum = new Tally();
  for (const t of tallies) sum.add(t);
  return sum;
}
