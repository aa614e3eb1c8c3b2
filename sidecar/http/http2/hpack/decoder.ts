import { DynamicTable, entrySize } from "./dynamic-table.ts";
import { HpackError } from "./hpack-error.ts";
import { huffmanDecode } from "./huffman.ts";
import type { ReadInteger } from "./integer.ts";
import { readInteger } from "./integer.ts";
import { STATIC } from "./static-table.ts";

/**
 * A decoded header block. `fields` alternates names and values in the order they came, as latin1
 * strings (one char per octet, so any octet survives the trip); `neverIndexed` holds the positions
 * (field numbers) the sender marked never-indexed, which a relay must forward the same way (§7.1.3).
 */
export interface HeaderBlock {
  readonly fields: string[];
  readonly neverIndexed: readonly number[];
  /** The list's size as SETTINGS_MAX_HEADER_LIST_SIZE counts it (§6.5.2 of RFC 9113). */
  readonly listSize: number;
  /** True when the list outgrew the decoder's limit: `fields` then stops where it did. */
  readonly oversized: boolean;
}

export interface DecoderOptions {
  /** The SETTINGS_HEADER_TABLE_SIZE this side announced: the most a size update may ask for. */
  readonly maxTableSize: number;
  /** Fields past this list size are decoded (the table must stay in step) but not kept. */
  readonly maxListSize: number;
}

/** Decodes the header blocks of one direction of one connection, in order (RFC 7541 §3). */
export class HpackDecoder {
  private readonly table: DynamicTable;
  private readonly int: ReadInteger = { value: 0, end: 0 };

  constructor(private readonly options: DecoderOptions) {
    this.table = new DynamicTable(options.maxTableSize);
  }

  /** Decodes a whole block; throws HpackError when it is malformed, after which the connection is unusable. */
  decode(block: Buffer): HeaderBlock {
    const fields: string[] = [];
    let neverIndexed: number[] | undefined;
    let listSize = 0;
    let oversized = false;
    let at = 0;
    let fieldsSeen = false;
    while (at < block.length) {
      const first = block[at] as number;
      let name: string;
      let value: string;
      let index = false;
      let never = false;
      if (first & 0x80) {
        readInteger(block, at, 7, this.int);
        at = this.int.end;
        if (this.int.value === 0) throw new HpackError("indexed field with index 0");
        name = this.nameAt(this.int.value);
        value = this.valueAt(this.int.value);
      } else if ((first & 0xe0) === 0x20) {
        if (fieldsSeen) throw new HpackError("dynamic table size update after the first field");
        readInteger(block, at, 5, this.int);
        at = this.int.end;
        if (this.int.value > this.options.maxTableSize)
          throw new HpackError(
            `dynamic table size update to ${this.int.value}, above the ${this.options.maxTableSize} allowed`,
          );
        this.table.resize(this.int.value);
        continue;
      } else {
        // Literal: with incremental indexing (01), never indexed (0001) or without indexing (0000).
        index = (first & 0xc0) === 0x40;
        never = (first & 0xf0) === 0x10;
        readInteger(block, at, index ? 6 : 4, this.int);
        at = this.int.end;
        if (this.int.value === 0) {
          name = this.readString(block, at);
          at = this.int.end;
        } else {
          name = this.nameAt(this.int.value);
        }
        value = this.readString(block, at);
        at = this.int.end;
      }
      fieldsSeen = true;
      if (index) this.table.add(name, value);
      listSize += entrySize(name, value);
      if (listSize > this.options.maxListSize) oversized = true;
      if (oversized) continue;
      if (never) (neverIndexed ??= []).push(fields.length / 2);
      fields.push(name, value);
    }
    return { fields, neverIndexed: neverIndexed ?? [], listSize, oversized };
  }

  private nameAt(index: number): string {
    if (index <= STATIC.length) return (STATIC[index - 1] as readonly [string, string])[0];
    const name = this.table.name(index - STATIC.length - 1);
    if (name === undefined) throw new HpackError(`index ${index} is past the dynamic table`);
    return name;
  }

  private valueAt(index: number): string {
    if (index <= STATIC.length) return (STATIC[index - 1] as readonly [string, string])[1];
    const value = this.table.value(index - STATIC.length - 1);
    if (value === undefined) throw new HpackError(`index ${index} is past the dynamic table`);
    return value;
  }

  /** Reads a string literal at `at`; its end is left in `this.int.end`. */
  private readString(block: Buffer, at: number): string {
    if (at >= block.length) throw new HpackError("string literal runs past the end of the header block");
    const huffman = ((block[at] as number) & 0x80) !== 0;
    readInteger(block, at, 7, this.int);
    const start = this.int.end;
    const end = start + this.int.value;
    if (end > block.length) throw new HpackError("string literal runs past the end of the header block");
    this.int.end = end;
    if (!huffman) return block.toString("latin1", start, end);
    const octets = huffmanDecode(block.subarray(start, end));
    if (typeof octets === "string") throw new HpackError(`Huffman string: ${octets}`);
    return octets.toString("latin1");
  }
}
