import { describe, expect, it } from "vitest";
import { serverSentEvents } from "../../core/sse.ts";
import { RecentKeys } from "../../controlplane/visibility/replica-follow.ts";

async function events(chunks: string[]) {
  async function* body() {
    for (const c of chunks) yield new TextEncoder().encode(c);
  }
  const out = [];
  for await (const e of serverSentEvents(body())) out.push(e);
  return out;
}

describe("Server-Sent Events", () => {
  it("reads events split anywhere across chunks, with CRLF or LF, skipping comments", async () => {
    expect(
      await events([
        ": live\n\nid: 1\nevent: fl",
        'ow\ndata: {"a"',
        ":1}\r\n\r\n",
        "data: x\ndata: y\n\n",
        ": ping\n\n",
      ]),
    ).toEqual([
      { event: "flow", data: '{"a":1}' },
      { event: "message", data: "x\ny" },
    ]);
  });

  it("drops an event the body cut off before its blank line", async () => {
    expect(await events(["event: flow\ndata: 1\n\nevent: flow\ndata: 2\n"])).toEqual([
      { event: "flow", data: "1" },
    ]);
  });
});

describe("a follow's record keys", () => {
  it("says each key is new once, and forgets the oldest past its bound", () => {
    const keys = new RecentKeys(2);
    expect([keys.add("a"), keys.add("a"), keys.add("b"), keys.add("c")]).toEqual([true, false, true, true]);
    expect([keys.add("b"), keys.add("a")]).toEqual([false, true]);
  });
});
