import { describe, expect, it } from "vitest";
import { parseKernelQueues } from "../../sidecar/fastpath/kernel-queues.ts";

describe("kernel NFQUEUE counters", () => {
  it("reads waiting packets and both drop causes per queue, skipping lines that are not counters", () => {
    const text = [
      "   10  -4100     3 2 65535   517     2       910  1",
      "   11  -4101     0 2 65535     0     0        12  1",
      "garbage line",
      "",
    ].join("\n");
    expect(parseKernelQueues(text)).toEqual([
      { queue: 10, waiting: 3, droppedFull: 517, droppedUnread: 2 },
      { queue: 11, waiting: 0, droppedFull: 0, droppedUnread: 0 },
    ]);
  });
});
