/**
 * The order a client visits control-plane replicas in: the first one, then the others in a random
 * order of its own, round and round. Clients that lose the same replica then spread over every
 * survivor instead of all moving to the next one in the list, and a client whose attempts keep
 * failing still tries each replica before it tries one again.
 */
export class ReplicaOrder {
  private readonly order: readonly number[];
  private position = 0;

  /** `first` defaults to a random replica, so clients started from the same list spread too. */
  constructor(count: number, first?: number, random: () => number = Math.random) {
    if (!Number.isInteger(count) || count < 1)
      throw new Error(`replica count ${count} is not a positive integer`);
    const start = (first ?? Math.floor(random() * count)) % count;
    const others = [...Array(count).keys()].filter((i) => i !== start);
    for (let i = others.length - 1; i > 0; i--) {
      const j = Math.floor(random() * (i + 1));
      [others[i], others[j]] = [others[j] as number, others[i] as number];
    }
    this.order = [start, ...others];
  }

  /** The replica the current (or next) attempt goes to. */
  get current(): number {
    return this.order[this.position] as number;
  }

  /** Moves on after a stream ended or an attempt failed, and returns where to. */
  advance(): number {
    this.position = (this.position + 1) % this.order.length;
    return this.current;
  }
}
