import { isIPv4, isIPv6 } from "node:net";

/**
 * IP addresses and CIDR blocks for matching non-mesh peers. Addresses are held as 32-bit words (one for
 * IPv4, four for IPv6) so matching is integer comparison, never string work on the hot path.
 */

export interface IpAddress {
  readonly family: 4 | 6;
  /** Big-endian 32-bit words: one for IPv4, four for IPv6. */
  readonly words: readonly number[];
}

export interface CidrBlock {
  readonly family: 4 | 6;
  /** Inclusive range, as words, after masking. */
  readonly first: readonly number[];
  readonly last: readonly number[];
}

function parseV4Words(text: string): number {
  const parts = text.split(".");
  let n = 0;
  for (const part of parts) n = n * 256 + Number(part);
  return n >>> 0;
}

function parseV6Words(text: string): number[] | null {
  let head = text;
  let tailV4: number | null = null;
  const lastColon = head.lastIndexOf(":");
  if (head.includes(".")) {
    tailV4 = parseV4Words(head.slice(lastColon + 1));
    head = head.slice(0, lastColon + 1) + "0:0";
  }
  const halves = head.split("::");
  if (halves.length > 2) return null;
  const left = halves[0] === "" ? [] : (halves[0] ?? "").split(":");
  const right = halves.length === 2 && halves[1] !== "" ? (halves[1] ?? "").split(":") : [];
  const missing = 8 - left.length - right.length;
  if (halves.length === 1 && missing !== 0) return null;
  if (missing < 0) return null;
  const groups = [...left, ...Array<string>(missing).fill("0"), ...right].map((g) => parseInt(g, 16));
  const words: number[] = [];
  for (let i = 0; i < 8; i += 2) words.push((((groups[i] ?? 0) << 16) | (groups[i + 1] ?? 0)) >>> 0);
  if (tailV4 !== null) words[3] = tailV4;
  return words;
}

/**
 * Parses an address as a socket reports it. A zone (`fe80::1%eth0`) is dropped and an IPv4-mapped IPv6
 * address (`::ffff:198.18.0.1`, what dual-stack sockets report) becomes the IPv4 address it carries.
 */
export function parseIpAddress(text: string): IpAddress | null {
  if (isIPv4(text)) return { family: 4, words: [parseV4Words(text)] };
  const zone = text.indexOf("%");
  const bare = zone >= 0 ? text.slice(0, zone) : text;
  if (!isIPv6(bare)) return null;
  const words = parseV6Words(bare);
  if (!words) return null;
  if (words[0] === 0 && words[1] === 0 && words[2] === 0xffff) return { family: 4, words: [words[3] ?? 0] };
  return { family: 6, words };
}

function maskWords(words: readonly number[], prefix: number, fill: boolean): number[] {
  return words.map((w, i) => {
    const bitsHere = Math.max(0, Math.min(32, prefix - i * 32));
    if (bitsHere === 32) return w;
    const hostMask = bitsHere === 0 ? 0xffffffff : 0xffffffff >>> bitsHere;
    return (fill ? w | hostMask : w & ~hostMask) >>> 0;
  });
}

export type CidrParse = { ok: true; block: CidrBlock } | { ok: false; reason: string };

/** Parses `addr/prefix` (or a bare address = a single host). Host bits must be zero, to catch typos. */
export function parseCidr(text: string): CidrParse {
  const slash = text.indexOf("/");
  const addrText = slash >= 0 ? text.slice(0, slash) : text;
  if (addrText.includes("%"))
    return { ok: false, reason: `"${text}" is not a CIDR block (zones not allowed)` };
  const addr = parseIpAddress(addrText);
  if (!addr) return { ok: false, reason: `"${text}" is not a CIDR block: bad address "${addrText}"` };
  if (addr.family === 4 && !isIPv4(addrText))
    return { ok: false, reason: `"${text}": write IPv4-mapped addresses in IPv4 form` };
  const max = addr.family === 4 ? 32 : 128;
  let prefix = max;
  if (slash >= 0) {
    const p = text.slice(slash + 1);
    if (!/^[0-9]{1,3}$/.test(p) || Number(p) > max)
      return { ok: false, reason: `"${text}" has a bad prefix length (0-${max})` };
    prefix = Number(p);
  }
  const first = maskWords(addr.words, prefix, false);
  if (first.some((w, i) => w !== addr.words[i]))
    return { ok: false, reason: `"${text}" has host bits set beyond /${prefix}` };
  return { ok: true, block: { family: addr.family, first, last: maskWords(addr.words, prefix, true) } };
}

function compareWords(a: readonly number[], b: readonly number[]): number {
  for (let i = 0; i < a.length; i++) {
    const d = (a[i] ?? 0) - (b[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

function successor(words: readonly number[]): number[] | null {
  const out = [...words];
  for (let i = out.length - 1; i >= 0; i--) {
    if (out[i] !== 0xffffffff) {
      out[i] = ((out[i] ?? 0) + 1) >>> 0;
      return out;
    }
    out[i] = 0;
  }
  return null;
}

/** A set of CIDR blocks compiled into sorted, merged, disjoint ranges per family; lookup is a binary search. */
export class CidrSet {
  private readonly v4: readonly CidrBlock[];
  private readonly v6: readonly CidrBlock[];

  constructor(blocks: readonly CidrBlock[]) {
    this.v4 = CidrSet.merge(blocks.filter((b) => b.family === 4));
    this.v6 = CidrSet.merge(blocks.filter((b) => b.family === 6));
  }

  private static merge(blocks: readonly CidrBlock[]): CidrBlock[] {
    const sorted = [...blocks].sort((a, b) => compareWords(a.first, b.first));
    const out: CidrBlock[] = [];
    for (const b of sorted) {
      const prev = out[out.length - 1];
      const next = prev ? successor(prev.last) : null;
      if (prev && (next === null || compareWords(b.first, next) <= 0)) {
        if (compareWords(b.last, prev.last) > 0) out[out.length - 1] = { ...prev, last: b.last };
      } else {
        out.push(b);
      }
    }
    return out;
  }

  contains(addr: IpAddress): boolean {
    const ranges = addr.family === 4 ? this.v4 : this.v6;
    let lo = 0;
    let hi = ranges.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const r = ranges[mid] as CidrBlock;
      if (compareWords(addr.words, r.first) < 0) hi = mid - 1;
      else if (compareWords(addr.words, r.last) > 0) lo = mid + 1;
      else return true;
    }
    return false;
  }
}
