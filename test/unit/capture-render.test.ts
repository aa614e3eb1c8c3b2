import { describe, expect, it } from "vitest";
import { describePlan } from "../../sidecar/capture/apply.ts";
import { parseCaptureConfig, type CaptureConfigInput } from "../../sidecar/capture/config.ts";
import { externalTables, type ExternalRules } from "../../sidecar/capture/external-rules.ts";
import { renderCapture } from "../../sidecar/capture/render.ts";

/** Rules shaped like the fast path's (sidecar/fastpath/rules.ts), handed to the capture wrapper. */
const FAST_PATH: ExternalRules = {
  owner: "fast path",
  restoreText: `*mangle
:SIGIL-FP-PRE - [0:0]
:SIGIL-FP-OUT - [0:0]
-A SIGIL-FP-PRE -p tcp --tcp-flags SYN,ACK,RST,FIN SYN -m multiport --dports 5432 -j NFQUEUE --queue-balance 4200:4201
-A SIGIL-FP-OUT -p tcp --tcp-flags SYN,ACK,RST,FIN SYN,ACK -m connmark --mark 0x400000/0xf00000 -j NFQUEUE --queue-balance 4200:4201
COMMIT
*filter
:SIGIL-FP-IN - [0:0]
-A SIGIL-FP-IN -m mark --mark 0x200000/0xf00000 -j REJECT --reject-with tcp-reset
-A SIGIL-FP-IN -p tcp -m multiport --dports 5432 -m connmark --mark 0x0/0xf00000 -j DROP
COMMIT
`,
  hooks: [
    { table: "mangle", builtin: "PREROUTING", chain: "SIGIL-FP-PRE" },
    { table: "mangle", builtin: "OUTPUT", chain: "SIGIL-FP-OUT" },
    { table: "filter", builtin: "INPUT", chain: "SIGIL-FP-IN" },
  ],
};

const rules = (input: CaptureConfigInput) => describePlan(renderCapture(parseCaptureConfig(input, "test")));

describe("rendered capture rules (golden)", () => {
  it("REDIRECT, IPv4 and IPv6, with port and CIDR exclusions (each CIDR only in its own family)", () => {
    expect(
      rules({
        proxyUid: 1337,
        excludeInboundPorts: [22],
        excludeOutboundPorts: [5432],
        excludeOutboundCidrs: ["198.18.9.0/24", "2001:2:0:9::/64"],
      }),
    ).toBe(`# IPv4: iptables-restore --noflush
*nat
-N SIGIL_INBOUND
-N SIGIL_IN_REDIRECT
-N SIGIL_OUTBOUND
-N SIGIL_OUT_REDIRECT
-A SIGIL_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
-A SIGIL_INBOUND -p tcp --dport 22 -j RETURN
-A SIGIL_INBOUND -p tcp -j SIGIL_IN_REDIRECT
-A SIGIL_OUT_REDIRECT -p tcp -j REDIRECT --to-ports 15001
-A SIGIL_OUTBOUND -m owner --uid-owner 1337 -j RETURN
-A SIGIL_OUTBOUND -o lo -j RETURN
-A SIGIL_OUTBOUND -d 198.18.9.0/24 -j RETURN
-A SIGIL_OUTBOUND -p tcp --dport 5432 -j RETURN
-A SIGIL_OUTBOUND -p tcp -j SIGIL_OUT_REDIRECT
-I PREROUTING 1 -p tcp -j SIGIL_INBOUND
-I OUTPUT 1 -p tcp -j SIGIL_OUTBOUND
COMMIT
# IPv6: ip6tables-restore --noflush
*nat
-N SIGIL_INBOUND
-N SIGIL_IN_REDIRECT
-N SIGIL_OUTBOUND
-N SIGIL_OUT_REDIRECT
-A SIGIL_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
-A SIGIL_INBOUND -p tcp --dport 22 -j RETURN
-A SIGIL_INBOUND -p tcp -j SIGIL_IN_REDIRECT
-A SIGIL_OUT_REDIRECT -p tcp -j REDIRECT --to-ports 15001
-A SIGIL_OUTBOUND -m owner --uid-owner 1337 -j RETURN
-A SIGIL_OUTBOUND -o lo -j RETURN
-A SIGIL_OUTBOUND -d 2001:2:0:9::/64 -j RETURN
-A SIGIL_OUTBOUND -p tcp --dport 5432 -j RETURN
-A SIGIL_OUTBOUND -p tcp -j SIGIL_OUT_REDIRECT
-I PREROUTING 1 -p tcp -j SIGIL_INBOUND
-I OUTPUT 1 -p tcp -j SIGIL_OUTBOUND
COMMIT
`);
  });

  it("TPROXY inbound with policy routing, uid+gid exemption, chosen inbound ports, VM-local uid capture", () => {
    expect(
      rules({
        mode: "tproxy",
        proxyUid: 1337,
        proxyGid: 1338,
        inboundPorts: [8080, 9090],
        captureUids: [1000],
        families: [4, 6],
        outboundPort: 16001,
        inboundPort: 16006,
      }),
    ).toBe(`# IPv4: iptables-restore --noflush
*mangle
-N SIGIL_INBOUND
-N SIGIL_DIVERT
-N SIGIL_TPROXY
-A SIGIL_DIVERT -j MARK --set-xmark 0x100/0x100
-A SIGIL_DIVERT -j ACCEPT
-A SIGIL_TPROXY ! -d 127.0.0.0/8 -p tcp -j TPROXY --on-port 16006 --on-ip 0.0.0.0 --tproxy-mark 0x100/0x100
-A SIGIL_INBOUND -p tcp -m socket --transparent -j SIGIL_DIVERT
-A SIGIL_INBOUND -p tcp --dport 8080 -j SIGIL_TPROXY
-A SIGIL_INBOUND -p tcp --dport 9090 -j SIGIL_TPROXY
-I PREROUTING 1 -p tcp -j SIGIL_INBOUND
COMMIT
*nat
-N SIGIL_OUTBOUND
-N SIGIL_OUT_REDIRECT
-A SIGIL_OUT_REDIRECT -p tcp -j REDIRECT --to-ports 16001
-A SIGIL_OUTBOUND -m owner --uid-owner 1337 --gid-owner 1338 -j RETURN
-A SIGIL_OUTBOUND -o lo -j RETURN
-A SIGIL_OUTBOUND -p tcp -m owner --uid-owner 1000 -j SIGIL_OUT_REDIRECT
-I OUTPUT 1 -p tcp -j SIGIL_OUTBOUND
COMMIT
# IPv4 policy routing for TPROXY (mark 0x100)
ip -4 rule add fwmark 0x100/0x100 lookup 133
ip -4 route add local 0.0.0.0/0 dev lo table 133
# IPv6: ip6tables-restore --noflush
*mangle
-N SIGIL_INBOUND
-N SIGIL_DIVERT
-N SIGIL_TPROXY
-A SIGIL_DIVERT -j MARK --set-xmark 0x100/0x100
-A SIGIL_DIVERT -j ACCEPT
-A SIGIL_TPROXY ! -d ::1/128 -p tcp -j TPROXY --on-port 16006 --on-ip :: --tproxy-mark 0x100/0x100
-A SIGIL_INBOUND -p tcp -m socket --transparent -j SIGIL_DIVERT
-A SIGIL_INBOUND -p tcp --dport 8080 -j SIGIL_TPROXY
-A SIGIL_INBOUND -p tcp --dport 9090 -j SIGIL_TPROXY
-I PREROUTING 1 -p tcp -j SIGIL_INBOUND
COMMIT
*nat
-N SIGIL_OUTBOUND
-N SIGIL_OUT_REDIRECT
-A SIGIL_OUT_REDIRECT -p tcp -j REDIRECT --to-ports 16001
-A SIGIL_OUTBOUND -m owner --uid-owner 1337 --gid-owner 1338 -j RETURN
-A SIGIL_OUTBOUND -o lo -j RETURN
-A SIGIL_OUTBOUND -p tcp -m owner --uid-owner 1000 -j SIGIL_OUT_REDIRECT
-I OUTPUT 1 -p tcp -j SIGIL_OUTBOUND
COMMIT
# IPv6 policy routing for TPROXY (mark 0x100)
ip -6 rule add fwmark 0x100/0x100 lookup 133
ip -6 route add local ::/0 dev lo table 133
`);
  });

  it("applies the fast path's own NFQUEUE rules first, and lets what it decided bypass the proxy", () => {
    const config = parseCaptureConfig(
      { proxyUid: 1337, families: [4], mode: "tproxy", fastPathMarkMask: 0xf00000 },
      "test",
    );
    expect(describePlan(renderCapture(config, externalTables(FAST_PATH))))
      .toBe(`# IPv4: iptables-restore --noflush
*mangle
-N SIGIL-FP-PRE
-N SIGIL-FP-OUT
-N SIGIL_INBOUND
-N SIGIL_DIVERT
-N SIGIL_TPROXY
-A SIGIL-FP-PRE -p tcp --tcp-flags SYN,ACK,RST,FIN SYN -m multiport --dports 5432 -j NFQUEUE --queue-balance 4200:4201
-A SIGIL-FP-OUT -p tcp --tcp-flags SYN,ACK,RST,FIN SYN,ACK -m connmark --mark 0x400000/0xf00000 -j NFQUEUE --queue-balance 4200:4201
-A SIGIL_DIVERT -j MARK --set-xmark 0x100/0x100
-A SIGIL_DIVERT -j ACCEPT
-A SIGIL_TPROXY ! -d 127.0.0.0/8 -p tcp -j TPROXY --on-port 15006 --on-ip 0.0.0.0 --tproxy-mark 0x100/0x100
-A SIGIL_INBOUND -m mark ! --mark 0x0/0xf00000 -j RETURN
-A SIGIL_INBOUND -m connmark ! --mark 0x0/0xf00000 -j RETURN
-A SIGIL_INBOUND -p tcp -m socket --transparent -j SIGIL_DIVERT
-A SIGIL_INBOUND -p tcp -j SIGIL_TPROXY
-I PREROUTING 1 -j SIGIL-FP-PRE
-I OUTPUT 1 -j SIGIL-FP-OUT
-I PREROUTING 2 -p tcp -j SIGIL_INBOUND
COMMIT
*filter
-N SIGIL-FP-IN
-A SIGIL-FP-IN -m mark --mark 0x200000/0xf00000 -j REJECT --reject-with tcp-reset
-A SIGIL-FP-IN -p tcp -m multiport --dports 5432 -m connmark --mark 0x0/0xf00000 -j DROP
-I INPUT 1 -j SIGIL-FP-IN
COMMIT
*nat
-N SIGIL_OUTBOUND
-N SIGIL_OUT_REDIRECT
-A SIGIL_OUT_REDIRECT -p tcp -j REDIRECT --to-ports 15001
-A SIGIL_OUTBOUND -m owner --uid-owner 1337 -j RETURN
-A SIGIL_OUTBOUND -m mark ! --mark 0x0/0xf00000 -j RETURN
-A SIGIL_OUTBOUND -m connmark ! --mark 0x0/0xf00000 -j RETURN
-A SIGIL_OUTBOUND -o lo -j RETURN
-A SIGIL_OUTBOUND -p tcp -j SIGIL_OUT_REDIRECT
-I OUTPUT 1 -p tcp -j SIGIL_OUTBOUND
COMMIT
# IPv4 policy routing for TPROXY (mark 0x100)
ip -4 rule add fwmark 0x100/0x100 lookup 133
ip -4 route add local 0.0.0.0/0 dev lo table 133
`);
  });

  it("rejects external rules that would touch built-in chains or undeclared chains, naming the line", () => {
    const bad =
      (restoreText: string, hooks = FAST_PATH.hooks.slice(0, 0)) =>
      () =>
        externalTables({ owner: "fast path", restoreText, hooks });
    expect(bad("*filter\n-A INPUT -j DROP\nCOMMIT\n")).toThrow(
      /rules from fast path, line 2 \("-A INPUT -j DROP"\): rule for a chain not declared/,
    );
    expect(bad("*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n")).toThrow(/line 2 .*only new user chains/);
    expect(bad("*filter\n-F INPUT\nCOMMIT\n")).toThrow(/only chain declarations and -A rules/);
    expect(bad("*filter\nCOMMIT\n", [{ table: "filter", builtin: "INPUT", chain: "NOPE" }])).toThrow(
      /undeclared chain/,
    );
  });

  it("renders only what is asked: outbound alone touches only nat OUTPUT", () => {
    expect(rules({ proxyUid: 1337, families: [6], inboundPorts: [] }))
      .toBe(`# IPv6: ip6tables-restore --noflush
*nat
-N SIGIL_OUTBOUND
-N SIGIL_OUT_REDIRECT
-A SIGIL_OUT_REDIRECT -p tcp -j REDIRECT --to-ports 15001
-A SIGIL_OUTBOUND -m owner --uid-owner 1337 -j RETURN
-A SIGIL_OUTBOUND -o lo -j RETURN
-A SIGIL_OUTBOUND -p tcp -j SIGIL_OUT_REDIRECT
-I OUTPUT 1 -p tcp -j SIGIL_OUTBOUND
COMMIT
`);
  });
});
