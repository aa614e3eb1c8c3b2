import { HpackError } from "./hpack-error.ts";

/**
 * HPACK's prefixed integers (RFC 7541 §5.1). Values are bounded to 2^28 - 1: nothing a header block
 * carries (an index, a string length, a table size) is larger, and the bound keeps the arithmetic
 * exact and refuses an endless run of continuation octets.
 */
const MAX = 2 ** 28 - 1;

/** Writes `value` with an N-bit prefix, `flags` holding the first octet's bits above it; returns the end offset. */
export function writeInteger(
  out: Buffer,
  offset: number,
  value: number,
  prefixBits: number,
  flags: number,
): number {
  const limit = (1 << prefixBits) - 1;
  if (value < limit) {
    out[offset] = flags | value;
    return offset + 1;
  }
  out[offset++] = flags | limit;
  let rest = value - limit;
  while (rest >= 0x80) {
    out[offset++] = (rest & 0x7f) | 0x80;
    rest = Math.floor(rest / 0x80);
  }
  out[offset++] = rest;
  return offset;
}

/** A decoded integer and the offset after it. */
export interface ReadInteger {
  value: number;
  end: number;
}

/** Reads an N-bit-prefix integer starting at `block[offset]` into `into`, to spare an object per field. */
export function readInteger(block: Buffer, offset: number, prefixBits: number, into: ReadInteger): void {
  const limit = (1 << prefixBits) - 1;
  let value = (block[offset] as number) & limit;
  let at = offset + 1;
  if (value === limit) {
    let shift = 0;
    for (;;) {
      if (at >= block.length) throw new HpackError("integer runs past the end of the header block");
      const octet = block[at++] as number;
      value += (octet & 0x7f) * 2 ** shift;
      if (value > MAX) throw new HpackError(`integer larger than ${MAX}`);
      if ((octet & 0x80) === 0) break;
      shift += 7;
    }
  }
  into.value = value;
  into.end = at;
}
