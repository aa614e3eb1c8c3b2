/**
 * HPACK's dynamic table (RFC 7541 §2.3.2, §4): newest entry first, each costing its name and value
 * octets plus 32, evicted oldest first to stay within the size the peer allowed.
 */
export class DynamicTable {
  /** Entries as name, value pairs in a ring, oldest at `head`. */
  private names: string[] = [];
  private values: string[] = [];
  private head = 0;
  private count = 0;
  private used = 0;

  constructor(private capacity: number) {}

  get size(): number {
    return this.used;
  }

  get maxSize(): number {
    return this.capacity;
  }

  get length(): number {
    return this.count;
  }

  /** The entry at dynamic index `i` (0 is the newest), or undefined past the end. */
  name(i: number): string | undefined {
    return i < this.count ? this.names[this.slot(i)] : undefined;
  }

  value(i: number): string | undefined {
    return i < this.count ? this.values[this.slot(i)] : undefined;
  }

  /** Adds an entry; one larger than the table empties it (§4.4). */
  add(name: string, value: string): void {
    const cost = entrySize(name, value);
    while (this.count > 0 && this.used + cost > this.capacity) this.evictOldest();
    if (cost > this.capacity) return;
    if (this.count === this.names.length) this.grow();
    const slot = (this.head + this.count) % this.names.length;
    this.names[slot] = name;
    this.values[slot] = value;
    this.count++;
    this.used += cost;
  }

  resize(capacity: number): void {
    this.capacity = capacity;
    while (this.count > 0 && this.used > capacity) this.evictOldest();
  }

  private slot(i: number): number {
    return (this.head + this.count - 1 - i) % this.names.length;
  }

  private evictOldest(): void {
    this.used -= entrySize(this.names[this.head] as string, this.values[this.head] as string);
    this.names[this.head] = "";
    this.values[this.head] = "";
    this.head = (this.head + 1) % this.names.length;
    this.count--;
  }

  private grow(): void {
    const size = Math.max(8, this.names.length * 2);
    const names = new Array<string>(size).fill("");
    const values = new Array<string>(size).fill("");
    for (let i = 0; i < this.count; i++) {
      const from = (this.head + i) % this.names.length;
      names[i] = this.names[from] as string;
      values[i] = this.values[from] as string;
    }
    this.names = names;
    this.values = values;
    this.head = 0;
  }
}

/** An entry's size as RFC 7541 §4.1 counts it: its octets (latin1 strings hold one per char) plus 32. */
export function entrySize(name: string, value: string): number {
  return name.length + value.length + 32;
}
