/**
 * The kernel's own counters of the NFQUEUE queues bound in this network namespace
 * (/proc/net/netfilter/nfnetlink_queue): how many handshake packets wait for a verdict, and how many
 * the kernel dropped because a queue was full (a flood of SYNs outrunning verification) or because
 * the enforcer's socket could not take them. The enforcer's own counters cannot see these packets:
 * they never reached it. A dropped handshake fails closed (the client retransmits); the queues never
 * set NFQA_CFG_F_FAIL_OPEN, and `--queue-bypass` only applies while no enforcer is bound.
 */
import { readFile } from "node:fs/promises";

export interface KernelQueueCounters {
  readonly queue: number;
  /** Packets queued and not yet given a verdict. */
  readonly waiting: number;
  /** Dropped because the queue held its maximum length. */
  readonly droppedFull: number;
  /** Dropped because the netlink message to the enforcer could not be sent (its socket was full). */
  readonly droppedUnread: number;
}

const PROC_FILE = "/proc/net/netfilter/nfnetlink_queue";

/** Parses the proc file: `queue portid waiting copy_mode copy_range queue_dropped user_dropped id 1`. */
export function parseKernelQueues(text: string): KernelQueueCounters[] {
  const out: KernelQueueCounters[] = [];
  for (const line of text.split("\n")) {
    const f = line.trim().split(/\s+/).map(Number);
    if (f.length < 7 || f.slice(0, 7).some((n) => !Number.isSafeInteger(n))) continue;
    out.push({
      queue: f[0] as number,
      waiting: f[2] as number,
      droppedFull: f[5] as number,
      droppedUnread: f[6] as number,
    });
  }
  return out;
}

/** The counters of `queues` (those bound in this namespace); empty when the file cannot be read. */
export async function readKernelQueues(queues: readonly number[]): Promise<KernelQueueCounters[]> {
  let text: string;
  try {
    text = await readFile(PROC_FILE, "utf8");
  } catch {
    return [];
  }
  const wanted = new Set(queues);
  return parseKernelQueues(text).filter((q) => wanted.has(q.queue));
}
