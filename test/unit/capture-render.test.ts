import { describe, expect, it } from "vitest";
import { describePlan } from "../../sidecar/capture/apply.ts";
import { parseCaptureConfig, type CaptureConfigInput } from "../../sidecar/capture/config.ts";
import { renderCapture } from "../../sidecar/capture/render.ts";

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

  it("fast-path NFQUEUE hooks come first, fail closed by default, and accepted connections skip the proxy", () => {
    expect(
      rules({
        proxyUid: 1337,
        families: [4],
        inboundPorts: [],
        fastPath: { queue: { first: 3, count: 2 }, servePorts: [5432], dialPorts: [6379] },
      }),
    ).toBe(`# IPv4: iptables-restore --noflush
*mangle
-N SIGIL_FASTPATH_IN
-N SIGIL_FASTPATH_OUT
-A SIGIL_FASTPATH_OUT -m owner --uid-owner 1337 -j RETURN
-A SIGIL_FASTPATH_IN -p tcp --dport 5432 --tcp-flags FIN,SYN,RST,ACK SYN -j NFQUEUE --queue-balance 3:4
-A SIGIL_FASTPATH_OUT -p tcp --sport 5432 --tcp-flags FIN,SYN,RST,ACK SYN,ACK -j NFQUEUE --queue-balance 3:4
-A SIGIL_FASTPATH_OUT -p tcp --dport 6379 --tcp-flags FIN,SYN,RST,ACK SYN -j NFQUEUE --queue-balance 3:4
-A SIGIL_FASTPATH_IN -p tcp --sport 6379 --tcp-flags FIN,SYN,RST,ACK SYN,ACK -j NFQUEUE --queue-balance 3:4
-I PREROUTING 1 -p tcp -j SIGIL_FASTPATH_IN
-I OUTPUT 1 -p tcp -j SIGIL_FASTPATH_OUT
COMMIT
*nat
-N SIGIL_OUTBOUND
-N SIGIL_OUT_REDIRECT
-A SIGIL_OUT_REDIRECT -p tcp -j REDIRECT --to-ports 15001
-A SIGIL_OUTBOUND -m owner --uid-owner 1337 -j RETURN
-A SIGIL_OUTBOUND -m connmark --mark 0x200/0x200 -j RETURN
-A SIGIL_OUTBOUND -o lo -j RETURN
-A SIGIL_OUTBOUND -p tcp -j SIGIL_OUT_REDIRECT
-I OUTPUT 1 -p tcp -j SIGIL_OUTBOUND
COMMIT
`);
    const failOpen = rules({
      proxyUid: 1337,
      families: [4],
      fastPath: { queue: { first: 0, count: 1 }, servePorts: [80], failOpen: true },
    });
    expect(failOpen).toContain("-j NFQUEUE --queue-num 0 --queue-bypass");
    expect(failOpen).toContain("-A SIGIL_INBOUND -m connmark --mark 0x200/0x200 -j RETURN");
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
