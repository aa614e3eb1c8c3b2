import { readFileSync } from "node:fs";

/**
 * Whether the fast path's enforcer queues are bound in this network namespace, read from the
 * kernel's own list (/proc/net/netfilter/nfnetlink_queue): a worker that died has unbound its queue,
 * and the handshakes routed there fail closed (or pass unchecked with fail-open) until it is back.
 */

/** Queue numbers some process has bound: the first column of nfnetlink_queue. */
export function boundQueues(text: string): Set<number> {
  const bound = new Set<number>();
  for (const line of text.split("\n")) {
    const first = line.trim().split(/\s+/)[0];
    if (first && /^\d+$/.test(first)) bound.add(Number(first));
  }
  return bound;
}

/** True when queues `first` .. `first + count - 1` are all bound; false if the list cannot be read. */
export function queuesBound(first: number, count: number): boolean {
  let bound: Set<number>;
  try {
    bound = boundQueues(readFileSync("/proc/net/netfilter/nfnetlink_queue", "utf8"));
  } catch {
    return false;
  }
  for (let q = first; q < first + count; q++) if (!bound.has(q)) return false;
  return true;
}
