import { describe, expect, it } from "vitest";
import { externalTables } from "../../sidecar/capture/external-rules.ts";
import {
  RuleError,
  fastPathExternalRules,
  queueForClientPort,
  renderRules,
} from "../../sidecar/fastpath/rules.ts";

const BASE = {
  inboundPorts: [5432],
  outboundPorts: [5432, 6379],
  queueFirst: 100,
  queueCount: 2,
  failOpen: false,
};

describe("fast-path rules", () => {
  it("queues only SYN and SYN-ACK of fast-path ports, fails closed, and resets refused SYNs", () => {
    const text = renderRules(BASE);
    const queued = text.split("\n").filter((l) => l.includes("NFQUEUE"));
    // 4 places (SYN and SYN-ACK, in and out) × 2 queues × 2 families.
    expect(queued).toHaveLength(16);
    for (const line of queued) {
      expect(line).toMatch(/--tcp-flags SYN,ACK,RST,FIN (SYN|SYN,ACK) /);
      expect(line).toMatch(/-j NFQUEUE --queue-num 10[01]$/);
      expect(line).not.toContain("--queue-balance");
      expect(line).not.toContain("--queue-bypass");
    }
    expect(text).toContain("-m multiport --dports 5432 -m u32");
    expect(text).toContain("-m multiport --dports 5432,6379 -m u32");
    expect(text).toMatch(/-p tcp -m mark --mark 0x200000\/0xf00000 -j REJECT --reject-with tcp-reset/);
    expect(text).toMatch(/--dports 5432 -m connmark --mark 0x0\/0xf00000 -j DROP/);
  });

  it("picks a connection's queue by its client port: the SYN's source port, the SYN-ACK's destination port", () => {
    const lines = renderRules(BASE).split("\n");
    const pre = lines.filter((l) => l.startsWith("-A SIGIL-FP-PRE"));
    // SYN: source port bit 1 (the word's bit 17); SYN-ACK: destination port bit 1.
    expect(pre).toContain(
      "-A SIGIL-FP-PRE -p tcp --tcp-flags SYN,ACK,RST,FIN SYN -m multiport --dports 5432 -m u32 --u32 0>>28=4&&0>>22&0x3C@0>>17&0x1=1 -j NFQUEUE --queue-num 101",
    );
    expect(pre).toContain(
      "-A SIGIL-FP-PRE -p tcp --tcp-flags SYN,ACK,RST,FIN SYN -m multiport --dports 5432 -m u32 --u32 0>>28=6&&4>>8&0xFF=6&&40>>17&0x1=0 -j NFQUEUE --queue-num 100",
    );
    expect(pre).toContain(
      "-A SIGIL-FP-PRE -p tcp --tcp-flags SYN,ACK,RST,FIN SYN,ACK -m connmark --mark 0x300000/0xf00000 -m u32 --u32 0>>28=4&&0>>22&0x3C@0>>1&0x1=0 -j NFQUEUE --queue-num 100",
    );
    // Data packets leave each chain at its first rule.
    expect(pre[0]).toBe("-A SIGIL-FP-PRE -p tcp ! --tcp-flags SYN SYN -j RETURN");
    // What no split test can read (IPv6 with extension headers) is dropped, never queued elsewhere.
    expect(pre.filter((l) => l.endsWith("-j DROP"))).toHaveLength(2);
    expect(queueForClientPort(40000, 100, 2)).toBe(100);
    expect(queueForClientPort(40002, 100, 2)).toBe(101);
    expect(queueForClientPort(40003, 100, 2)).toBe(101);
  });

  it("spreads the ports Linux hands to connect() over every queue, for any queue count", () => {
    for (const count of [2, 3, 4, 5]) {
      const seen = new Map<number, number>();
      for (let port = 32768; port < 61000; port += 2) {
        const q = queueForClientPort(port, 7, count);
        seen.set(q, (seen.get(q) ?? 0) + 1);
      }
      expect([...seen.keys()].sort((a, b) => a - b)).toEqual(Array.from({ length: count }, (_, i) => 7 + i));
      const shares = [...seen.values()].map((n) => n / ((61000 - 32768) / 2));
      for (const share of shares) expect(Math.abs(share - 1 / count)).toBeLessThan(0.01);
    }
    const three = renderRules({ ...BASE, queueCount: 3 });
    expect(three).toContain("0>>22&0x3C@0>>17&0xff=0:84 -j NFQUEUE --queue-num 100");
    expect(three).toContain("0>>22&0x3C@0>>17&0xff=170:255 -j NFQUEUE --queue-num 102");
  });

  it("adds --queue-bypass and drops the unmarked-connection DROP only when fail-open is asked for", () => {
    const text = renderRules({ ...BASE, failOpen: true, queueCount: 1 });
    expect(text).toContain("NFQUEUE --queue-num 100 --queue-bypass");
    expect(text).not.toContain("-j DROP");
  });

  it("splits long port lists to fit multiport and refuses invalid ports and queues", () => {
    const ports = Array.from({ length: 20 }, (_, i) => 9000 + i);
    const text = renderRules({ ...BASE, inboundPorts: ports });
    const groups = new Set(
      text
        .split("\n")
        .filter((l) => l.startsWith("-A SIGIL-FP-PRE"))
        .map((l) => /--dports (\S+)/.exec(l)?.[1])
        .filter((g) => g !== undefined),
    );
    expect([...groups]).toHaveLength(2);
    expect(() => renderRules({ ...BASE, inboundPorts: [0] })).toThrow(RuleError);
    expect(() => renderRules({ ...BASE, queueFirst: 65535 })).toThrow(/queue range/);
    expect(() => renderRules({ ...BASE, queueCount: 257 })).toThrow(/queue range/);
    expect(() => renderRules({ ...BASE, queueCount: 0 })).toThrow(/queue range/);
  });

  it("hands the capture wrapper rules it accepts, with one hook per chain", () => {
    const tables = externalTables(fastPathExternalRules(BASE));
    expect(tables.map((t) => t.table).sort()).toEqual(["filter", "mangle"]);
    expect(tables.flatMap((t) => t.hooks.map((h) => h.chain)).sort()).toEqual([
      "INPUT",
      "OUTPUT",
      "OUTPUT",
      "PREROUTING",
    ]);
  });
});
