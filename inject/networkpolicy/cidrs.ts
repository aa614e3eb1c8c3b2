import { parseCidr, type CidrBlock } from "../../core/policy/address.ts";

/**
 * An ipBlock's `except` has no counterpart in Sigil's `cidrs`, but the set it describes does: the
 * block minus the exceptions is a finite list of CIDR blocks, so the translation stays exact.
 */

interface Range {
  readonly family: 4 | 6;
  readonly base: bigint;
  readonly prefix: number;
}

const bitsOf = (family: 4 | 6): number => (family === 4 ? 32 : 128);

function toBigInt(words: readonly number[]): bigint {
  return words.reduce((n, w) => (n << 32n) | BigInt(w), 0n);
}

function rangeOf(block: CidrBlock): Range {
  const bits = bitsOf(block.family);
  const first = toBigInt(block.first);
  const size = toBigInt(block.last) - first + 1n;
  return { family: block.family, base: first, prefix: bits - (size.toString(2).length - 1) };
}

const last = (r: Range): bigint => r.base + (1n << BigInt(bitsOf(r.family) - r.prefix)) - 1n;
const within = (inner: Range, outer: Range): boolean =>
  inner.base >= outer.base && last(inner) <= last(outer);
const overlaps = (a: Range, b: Range): boolean => a.base <= last(b) && b.base <= last(a);

function format(r: Range): string {
  if (r.family === 4) {
    const octets = [24n, 16n, 8n, 0n].map((s) => String((r.base >> s) & 0xffn));
    return `${octets.join(".")}/${r.prefix}`;
  }
  const groups = Array.from({ length: 8 }, (_, i) =>
    ((r.base >> BigInt(112 - 16 * i)) & 0xffffn).toString(16),
  );
  // The longest run of two or more zero groups becomes "::" (RFC 5952).
  let best = { at: -1, length: 1 };
  for (let i = 0; i < 8;) {
    let j = i;
    while (j < 8 && groups[j] === "0") j++;
    if (j - i > best.length) best = { at: i, length: j - i };
    i = j === i ? i + 1 : j;
  }
  const text =
    best.at < 0
      ? groups.join(":")
      : `${groups.slice(0, best.at).join(":")}::${groups.slice(best.at + best.length).join(":")}`;
  return `${text}/${r.prefix}`;
}

function subtract(block: Range, excepts: readonly Range[]): Range[] {
  const hit = excepts.filter((e) => overlaps(e, block));
  if (hit.length === 0) return [block];
  if (hit.some((e) => within(block, e))) return [];
  const prefix = block.prefix + 1;
  const half = 1n << BigInt(bitsOf(block.family) - prefix);
  return [
    ...subtract({ ...block, prefix }, hit),
    ...subtract({ family: block.family, base: block.base + half, prefix }, hit),
  ];
}

export class CidrProblem extends Error {
  constructor(
    /** `cidr` or `except[<i>]`, relative to the ipBlock. */
    readonly field: string,
    readonly reason: string,
  ) {
    super(`${field}: ${reason}`);
  }
}

/** `cidr` minus every `except` as CIDR blocks (empty when the exceptions cover it all). */
export function ipBlockCidrs(cidr: string, except: readonly string[] = []): string[] {
  const parse = (text: string, field: string): Range => {
    const r = parseCidr(text);
    if (!r.ok) throw new CidrProblem(field, r.reason);
    if (!text.includes("/")) throw new CidrProblem(field, `"${text}" has no prefix length`);
    return rangeOf(r.block);
  };
  const block = parse(cidr, "cidr");
  const excepts = except.map((text, i) => {
    const e = parse(text, `except[${i}]`);
    if (e.family !== block.family || !within(e, block))
      throw new CidrProblem(`except[${i}]`, `"${text}" is not within the ipBlock's cidr ${cidr}`);
    return e;
  });
  return subtract(block, excepts).map(format);
}
