import type { NativeQueue, QueueOptions, QueueStats, VerdictCode } from "./addon.ts";
import { load, NativeUnavailableError } from "./load.ts";
import type { WarmHandshakes } from "./warm-handshakes.ts";

/** One packet handed over by NFQUEUE. */
export interface QueuedPacket {
  /** Kernel packet id, the key of the verdict. */
  readonly id: number;
  /** Netfilter hook: 0 PREROUTING, 1 INPUT, 2 FORWARD, 3 OUTPUT, 4 POSTROUTING. */
  readonly hook: number;
  readonly family: 4 | 6;
  /** The packet mark (skb->mark) when it was queued. */
  readonly mark: number;
  /** The IP packet, starting at the IP header. */
  readonly packet: Buffer;
}

/** An NFQUEUE queue bound in this process's network namespace; every delivered packet needs a verdict. */
export class PacketQueue {
  private readonly native: NativeQueue;

  /** With `warm`, packets the warm table can decide never reach `onPacket`. */
  constructor(
    readonly queue: number,
    options: QueueOptions,
    onPacket: (packet: QueuedPacket) => void,
    warm?: WarmHandshakes,
  ) {
    const binding = load();
    if (!binding.NfQueue) {
      throw new NativeUnavailableError(
        "the native addon was built without libnetfilter_queue (install libnetfilter-queue-dev and libmnl-dev, then rebuild)",
      );
    }
    // The addon passes each packet's fields as arguments (cheaper than a native-built object).
    this.native = new binding.NfQueue(
      queue,
      options,
      (id, hook, family, mark, packet) => onPacket({ id, hook, family, mark, packet }),
      warm?.native,
    );
  }

  /** Gives the verdict for packet `id`, optionally setting its mark and replacing its bytes. */
  verdict(id: number, verdict: VerdictCode, mark?: number, packet?: Buffer): void {
    this.native.verdict(id, verdict, mark, packet);
  }

  stats(): QueueStats {
    return this.native.stats();
  }

  /** Unbinds the queue and closes the netlink socket; idempotent. */
  close(): void {
    this.native.close();
  }
}
