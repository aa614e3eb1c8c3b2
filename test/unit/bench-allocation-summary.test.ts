import { describe, expect, it } from "vitest";
import { summarizeAllocations, type AllocationNode } from "../../bench/compare/allocation-summary.ts";

const frame = (functionName: string, line = 0) => ({
  functionName,
  url: "node:internal/x",
  lineNumber: line,
});
const node = (name: string, selfSize: number, children: AllocationNode[] = []): AllocationNode => ({
  callFrame: frame(name),
  selfSize,
  children,
});

describe("bench/compare allocation summary", () => {
  it("gives each function its own bytes and the bytes allocated under it, a recursive one counted once per path", () => {
    // root → forward(100) → request(300) → forward(200, recursion) ; root → onStream(400)
    const head = node("(root)", 0, [
      node("forward", 100, [node("request", 300, [node("forward", 200)])]),
      node("onStream", 400),
    ]);
    const { rows, totalBytes } = summarizeAllocations(head);
    expect(totalBytes).toBe(1000);
    const row = (name: string) => rows.find((r) => r.name === name);
    expect(row("forward")).toMatchObject({ selfPercent: 30, totalPercent: 60 });
    expect(row("request")).toMatchObject({ selfPercent: 30, totalPercent: 50 });
    expect(row("onStream")).toMatchObject({ selfPercent: 40, totalPercent: 40 });
    expect(row("(root)")).toMatchObject({ selfPercent: 0, totalPercent: 100 });
    expect(row("forward")?.where).toBe("node:internal/x:1");
  });
});
