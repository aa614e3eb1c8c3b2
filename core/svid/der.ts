/**
 * The small subset of DER that Sigil's label extension needs: SEQUENCE and UTF8String, definite
 * lengths in their shortest form. The decoder is strict (no BER leniency, no trailing bytes) because
 * the extension is security-relevant input: one byte string must have exactly one meaning.
 */

export const TAG_SEQUENCE = 0x30;
export const TAG_UTF8_STRING = 0x0c;
export const TAG_OID = 0x06;
export const TAG_BOOLEAN = 0x01;
export const TAG_OCTET_STRING = 0x04;

/** Malformed DER, with the byte offset where decoding stopped. */
export class DerError extends Error {
  constructor(
    message: string,
    readonly offset: number,
  ) {
    super(`${message} at byte ${offset}`);
  }
}

export interface Tlv {
  readonly tag: number;
  readonly content: Buffer;
  /** Offset just past this element. */
  readonly end: number;
}

function encodeLength(length: number): Buffer {
  if (length < 0x80) return Buffer.from([length]);
  const bytes: number[] = [];
  for (let n = length; n > 0; n = Math.floor(n / 256)) bytes.unshift(n & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

export function encodeTlv(tag: number, content: Buffer): Buffer {
  return Buffer.concat([Buffer.from([tag]), encodeLength(content.length), content]);
}

export function encodeSequence(items: readonly Buffer[]): Buffer {
  return encodeTlv(TAG_SEQUENCE, Buffer.concat(items));
}

export function encodeUtf8String(text: string): Buffer {
  return encodeTlv(TAG_UTF8_STRING, Buffer.from(text, "utf8"));
}

/** Reads one element starting at `offset`; rejects indefinite and non-minimal lengths. */
export function readTlv(buf: Buffer, offset: number): Tlv {
  if (offset + 2 > buf.length) throw new DerError("truncated element header", offset);
  const tag = buf[offset] as number;
  if ((tag & 0x1f) === 0x1f) throw new DerError("multi-byte tags are not used here", offset);
  const first = buf[offset + 1] as number;
  let length: number;
  let headerEnd = offset + 2;
  if (first < 0x80) {
    length = first;
  } else {
    const count = first & 0x7f;
    if (count === 0) throw new DerError("indefinite length is not DER", offset + 1);
    if (count > 4) throw new DerError("length field longer than 4 bytes", offset + 1);
    if (headerEnd + count > buf.length) throw new DerError("truncated length", offset + 1);
    length = 0;
    for (let i = 0; i < count; i++) length = length * 256 + (buf[headerEnd + i] as number);
    if (buf[headerEnd] === 0 || length < 0x80) throw new DerError("length not in shortest form", offset + 1);
    headerEnd += count;
  }
  const end = headerEnd + length;
  if (end > buf.length) throw new DerError(`element length ${length} runs past the end`, offset);
  return { tag, content: buf.subarray(headerEnd, end), end };
}

/** Decodes `buf` as exactly one element of the given tag, with nothing after it. */
export function readExactly(buf: Buffer, tag: number, offset = 0): Tlv {
  const tlv = readTlv(buf, offset);
  if (tlv.tag !== tag)
    throw new DerError(`expected tag 0x${tag.toString(16)}, found 0x${tlv.tag.toString(16)}`, offset);
  if (tlv.end !== buf.length) throw new DerError("trailing bytes after element", tlv.end);
  return tlv;
}

/** Splits the content of a constructed element into its children. */
export function readChildren(content: Buffer): Tlv[] {
  const out: Tlv[] = [];
  for (let offset = 0; offset < content.length;) {
    const tlv = readTlv(content, offset);
    out.push(tlv);
    offset = tlv.end;
  }
  return out;
}

/** Decodes UTF8String content, refusing byte sequences that are not valid UTF-8. */
export function decodeUtf8(content: Buffer, offset: number): string {
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(content);
  } catch {
    throw new DerError("UTF8String is not valid UTF-8", offset);
  }
}

/** DER content of an OBJECT IDENTIFIER; arcs may exceed 2^53 (UUID-derived `2.25.*` OIDs do). */
export function encodeOidContent(oid: string): Buffer {
  const arcs = oid.split(".").map((a) => {
    if (!/^(0|[1-9][0-9]*)$/.test(a)) throw new Error(`OID "${oid}" has an invalid arc "${a}"`);
    return BigInt(a);
  });
  const [first, second, ...rest] = arcs;
  if (first === undefined || second === undefined || first > 2n || (first < 2n && second > 39n)) {
    throw new Error(`OID "${oid}" is not valid`);
  }
  const bytes: number[] = [];
  for (const arc of [first * 40n + second, ...rest]) {
    const chunk: number[] = [Number(arc & 0x7fn)];
    for (let n = arc >> 7n; n > 0n; n >>= 7n) chunk.unshift(Number(n & 0x7fn) | 0x80);
    bytes.push(...chunk);
  }
  return Buffer.from(bytes);
}
