import { describe, expect, it } from "vitest";
import { externalTables } from "../../sidecar/capture/external-rules.ts";
import { RuleError, fastPathExternalRules, renderRules } from "../../sidecar/fastpath/rules.ts";

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
    expect(queued).toHaveLength(4);
    for (const line of queued) {
      expect(line).toMatch(/--tcp-flags SYN,ACK,RST,FIN (SYN|SYN,ACK) /);
      expect(line).toContain("--queue-balance 100:101");
      expect(line).not.toContain("--queue-bypass");
    }
    expect(text).toContain("-m multiport --dports 5432 -j NFQUEUE");
    expect(text).toContain("-m multiport --dports 5432,6379 -j NFQUEUE");
    expect(text).toMatch(/-p tcp -m mark --mark 0x200000\/0xf00000 -j REJECT --reject-with tcp-reset/);
    expect(text).toMatch(/--dports 5432 -m connmark --mark 0x0\/0xf00000 -j DROP/);
  });

  it("adds --queue-bypass and drops the unmarked-connection DROP only when fail-open is asked for", () => {
    const text = renderRules({ ...BASE, failOpen: true, queueCount: 1 });
    expect(text).toContain("NFQUEUE --queue-num 100 --queue-bypass");
    expect(text).not.toContain("-j DROP");
  });

  it("splits long port lists to fit multiport and refuses invalid ports and queues", () => {
    const ports = Array.from({ length: 20 }, (_, i) => 9000 + i);
    const text = renderRules({ ...BASE, inboundPorts: ports });
    expect(text.split("\n").filter((l) => l.includes("SIGIL-FP-PRE") && l.includes("--dports"))).toHaveLength(
      2,
    );
    expect(() => renderRules({ ...BASE, inboundPorts: [0] })).toThrow(RuleError);
    expect(() => renderRules({ ...BASE, queueFirst: 65535 })).toThrow(/queue range/);
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
