/**
 * The HPACK Huffman code (RFC 7541 Appendix B). The code is canonical, so the table is kept as each
 * symbol's code length and the codes are derived from it; symbol 256 is EOS.
 */
// Rows of 16 symbols, so a symbol's length is found by its row and column.
// prettier-ignore
const LENGTHS: readonly number[] = [
  13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28,
  28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28,
  6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6,
  5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10,
  13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
  7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6,
  15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5,
  6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28,
  20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23,
  24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24,
  22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23,
  21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23,
  26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25,
  19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27,
  20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23,
  26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26,
  30,
];

const EOS = 256;

/** Each symbol's code, assigned in (length, symbol) order as a canonical code is. */
const CODES = new Uint32Array(257);
/** The decoding tree: entry 2n + bit of node n is a child node (> 0) or a symbol as -(symbol + 1). */
const TREE = new Int32Array(2 * 256);

function build(): void {
  const order = LENGTHS.map((_, s) => s).sort(
    (a, b) => (LENGTHS[a] as number) - (LENGTHS[b] as number) || a - b,
  );
  let code = 0;
  let previous = LENGTHS[order[0] as number] as number;
  let nodes = 1;
  for (const [i, symbol] of order.entries()) {
    const length = LENGTHS[symbol] as number;
    if (i > 0) code = (code + 1) * 2 ** (length - previous);
    previous = length;
    CODES[symbol] = code;
    let node = 0;
    for (let bit = length - 1; bit > 0; bit--) {
      const slot = 2 * node + ((code >>> bit) & 1);
      if (TREE[slot] === 0) TREE[slot] = nodes++;
      node = TREE[slot] as number;
    }
    TREE[2 * node + (code & 1)] = -(symbol + 1);
  }
}
build();

/** How many octets a latin1 string (one char per octet) takes Huffman-coded. */
export function huffmanLength(octets: string): number {
  let bits = 0;
  for (let i = 0; i < octets.length; i++) bits += LENGTHS[octets.charCodeAt(i) & 0xff] as number;
  return Math.ceil(bits / 8);
}

/** Writes a latin1 string Huffman-coded at `out[offset]`, padded with EOS's leading ones; returns the end offset. */
export function huffmanEncode(octets: string, out: Buffer, offset: number): number {
  let pending = 0;
  let pendingBits = 0;
  let at = offset;
  for (let i = 0; i < octets.length; i++) {
    const symbol = octets.charCodeAt(i) & 0xff;
    const length = LENGTHS[symbol] as number;
    // At most 7 bits wait from the previous symbol and a code is at most 30 bits: split the code
    // so the accumulator never exceeds 32 bits.
    let code = CODES[symbol] as number;
    let remaining = length;
    while (remaining > 0) {
      const take = Math.min(remaining, 24 - pendingBits);
      const part = (code >>> (remaining - take)) & ((1 << take) - 1);
      pending = (pending << take) | part;
      pendingBits += take;
      remaining -= take;
      code &= remaining === 0 ? 0 : (1 << remaining) - 1;
      while (pendingBits >= 8) {
        pendingBits -= 8;
        out[at++] = (pending >>> pendingBits) & 0xff;
      }
      pending &= (1 << pendingBits) - 1;
    }
  }
  if (pendingBits > 0) out[at++] = ((pending << (8 - pendingBits)) | (0xff >>> pendingBits)) & 0xff;
  return at;
}

/** Why a Huffman-coded string was refused (RFC 7541 §5.2). */
export type HuffmanError = "EOS in string" | "padding longer than 7 bits" | "padding not EOS's prefix";

/** Decodes a Huffman-coded string to its octets, or names why it is invalid. */
export function huffmanDecode(coded: Buffer): Buffer | HuffmanError {
  const out = Buffer.allocUnsafe(Math.floor((coded.length * 8) / 5));
  let at = 0;
  let node = 0;
  let depth = 0;
  let ones = true;
  for (let i = 0; i < coded.length; i++) {
    const byte = coded[i] as number;
    for (let bit = 7; bit >= 0; bit--) {
      const b = (byte >>> bit) & 1;
      const next = TREE[2 * node + b] as number;
      if (next < 0) {
        const symbol = -next - 1;
        if (symbol === EOS) return "EOS in string";
        out[at++] = symbol;
        node = 0;
        depth = 0;
        ones = true;
      } else {
        node = next;
        depth++;
        ones &&= b === 1;
      }
    }
  }
  if (depth > 7) return "padding longer than 7 bits";
  if (!ones) return "padding not EOS's prefix";
  return out.subarray(0, at);
}
