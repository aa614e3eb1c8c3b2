import { DynamicTable, entrySize } from "./dynamic-table.ts";
import { huffmanEncode, huffmanLength } from "./huffman.ts";
import { writeInteger } from "./integer.ts";
import { STATIC, STATIC_FIELD_INDEX, STATIC_NAME_INDEX } from "./static-table.ts";

/** SETTINGS_HEADER_TABLE_SIZE until the peer's SETTINGS say otherwise (RFC 9113 §6.5.2). */
const DEFAULT_TABLE_SIZE = 4096;

/** Names whose values are credentials: never put in a table an attacker sharing the connection could probe (§7.1). */
const SENSITIVE = new Set(["authorization", "proxy-authorization"]);

/** Short cookies are guessable by size (§7.1.3), as nghttp2 treats them. */
const SHORT_COOKIE = 20;

/** Fields whose values change with nearly every message: a table entry for one would only evict others. */
const NOT_INDEXED = new Set([
  ":path",
  "content-length",
  "date",
  "etag",
  "if-modified-since",
  "if-none-match",
  "last-modified",
  "location",
  "set-cookie",
  "age",
]);

/**
 * Encodes the header blocks of one direction of one connection (RFC 7541). It keeps the same dynamic
 * table the peer's decoder keeps: exact matches are sent as indexes, other fields as literals,
 * entered in the table unless they are sensitive or change per message.
 */
export class HpackEncoder {
  private readonly table: DynamicTable;
  /** "name\0value" of each table entry → the number it was inserted as. */
  private readonly fieldAt = new Map<string, number>();
  /** Name of each table entry → the number of its newest insertion. */
  private readonly nameAt = new Map<string, number>();
  private inserted = 0;
  private pendingMin: number | undefined;
  private scratch = Buffer.allocUnsafe(1024);

  /** `limit`: the most table this side keeps for a peer, whatever larger size the peer allows. */
  constructor(private readonly limit = 4096) {
    this.table = new DynamicTable(Math.min(limit, DEFAULT_TABLE_SIZE));
  }

  /** Applies the peer's SETTINGS_HEADER_TABLE_SIZE, announced at the start of the next block (§4.2). */
  setMaxTableSize(peerSize: number): void {
    const size = Math.min(peerSize, this.limit);
    if (size === this.table.maxSize && this.pendingMin === undefined) return;
    this.pendingMin = Math.min(this.pendingMin ?? size, size);
    this.resize(size);
  }

  /**
   * Encodes `fields` (names and values alternating, latin1 strings). `neverIndexed` lists field
   * numbers to send never-indexed, as a relay must for fields that arrived so. The buffer returned is
   * reused by the next call.
   */
  encode(fields: readonly string[], neverIndexed: readonly number[] = []): Buffer {
    let bound = 12;
    for (let i = 0; i < fields.length; i++) bound += (fields[i] as string).length + 6;
    if (this.scratch.length < bound)
      this.scratch = Buffer.allocUnsafe(Math.max(bound, this.scratch.length * 2));
    const out = this.scratch;
    let at = 0;
    if (this.pendingMin !== undefined) {
      if (this.pendingMin < this.table.maxSize) at = writeInteger(out, at, this.pendingMin, 5, 0x20);
      at = writeInteger(out, at, this.table.maxSize, 5, 0x20);
      this.pendingMin = undefined;
    }
    let nextNever = 0;
    for (let i = 0; i < fields.length; i += 2) {
      const name = fields[i] as string;
      const value = fields[i + 1] as string;
      const marked = neverIndexed[nextNever] === i / 2;
      if (marked) nextNever++;
      const never = marked || SENSITIVE.has(name) || (name === "cookie" && value.length < SHORT_COOKIE);
      at = this.field(out, at, name, value, never);
    }
    return out.subarray(0, at);
  }

  private field(out: Buffer, at: number, name: string, value: string, never: boolean): number {
    const key = `${name}\0${value}`;
    if (!never) {
      const exact = STATIC_FIELD_INDEX.get(key) ?? this.dynamicIndex(this.fieldAt.get(key));
      if (exact !== undefined) return writeInteger(out, at, exact, 7, 0x80);
    }
    const nameIndex = STATIC_NAME_INDEX.get(name) ?? this.dynamicIndex(this.nameAt.get(name)) ?? 0;
    const index = !never && !NOT_INDEXED.has(name) && entrySize(name, value) <= this.table.maxSize * 0.75;
    at = index
      ? writeInteger(out, at, nameIndex, 6, 0x40)
      : writeInteger(out, at, nameIndex, 4, never ? 0x10 : 0);
    if (nameIndex === 0) at = writeString(out, at, name);
    at = writeString(out, at, value);
    if (index) this.insert(name, value, key);
    return at;
  }

  /** The current index of the entry inserted as number `n`, if the table still holds it. */
  private dynamicIndex(n: number | undefined): number | undefined {
    if (n === undefined || n < this.inserted - this.table.length) return undefined;
    return STATIC.length + this.inserted - n;
  }

  private insert(name: string, value: string, key: string): void {
    const before = this.table.length;
    const oldest = this.inserted - before;
    const cost = entrySize(name, value);
    let evicted = 0;
    for (let size = this.table.size; evicted < before && size + cost > this.table.maxSize; evicted++)
      size -= entrySize(
        this.table.name(before - 1 - evicted) as string,
        this.table.value(before - 1 - evicted) as string,
      );
    this.forget(oldest, evicted, before);
    this.table.add(name, value);
    this.fieldAt.set(key, this.inserted);
    this.nameAt.set(name, this.inserted);
    this.inserted++;
  }

  private resize(size: number): void {
    const before = this.table.length;
    let evicted = 0;
    for (let used = this.table.size; evicted < before && used > size; evicted++)
      used -= entrySize(
        this.table.name(before - 1 - evicted) as string,
        this.table.value(before - 1 - evicted) as string,
      );
    this.forget(this.inserted - before, evicted, before);
    this.table.resize(size);
  }

  /** Drops the lookups of the `count` oldest entries, numbered from `oldest`, before the table evicts them. */
  private forget(oldest: number, count: number, length: number): void {
    for (let k = 0; k < count; k++) {
      const name = this.table.name(length - 1 - k) as string;
      const key = `${name}\0${this.table.value(length - 1 - k) as string}`;
      if (this.fieldAt.get(key) === oldest + k) this.fieldAt.delete(key);
      if (this.nameAt.get(name) === oldest + k) this.nameAt.delete(name);
    }
  }
}

/** Writes a string literal, Huffman-coded when that is shorter. */
function writeString(out: Buffer, at: number, s: string): number {
  const coded = huffmanLength(s);
  if (coded < s.length) {
    at = writeInteger(out, at, coded, 7, 0x80);
    return huffmanEncode(s, out, at);
  }
  at = writeInteger(out, at, s.length, 7, 0);
  return at + out.write(s, at, "latin1");
}
