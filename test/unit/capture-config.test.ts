import { describe, expect, it } from "vitest";
import { CaptureConfigError, parseCaptureConfig } from "../../sidecar/capture/config.ts";

const problems = (input: unknown): string[] => {
  try {
    parseCaptureConfig(input, "test.yaml");
  } catch (error) {
    if (error instanceof CaptureConfigError) return error.issues;
    throw error;
  }
  return [];
};

describe("capture configuration", () => {
  it("fills the documented defaults", () => {
    expect(parseCaptureConfig({ proxyUid: 1337 }, "x")).toMatchObject({
      mode: "redirect",
      inboundPort: 15006,
      outboundPort: 15001,
      proxyGid: null,
      inboundPorts: "*",
      outbound: true,
      families: [4, 6],
      backend: "auto",
      tproxy: { mark: { value: 0x100, mask: 0x100 }, routeTable: 133 },
      fastPathMarkMask: null,
    });
  });

  it("refuses to exempt root unless told to, since every root process would escape capture", () => {
    expect(problems({ proxyUid: 0 })[0]).toMatch(/proxyUid: 0 would exempt every root process/);
    expect(problems({ proxyUid: 0, allowRootProxy: true })).toEqual([]);
  });

  it("names the field of each problem", () => {
    expect(problems({})).toEqual([expect.stringMatching(/^proxyUid: /)]);
    expect(problems({ proxyUid: 1, excludeOutboundCidrs: ["198.18.0.0/33", "nope"] })).toEqual([
      'excludeOutboundCidrs.0: "198.18.0.0/33" has a prefix length outside 0..32',
      'excludeOutboundCidrs.1: "nope" is not an IPv4 or IPv6 address or CIDR',
    ]);
    expect(problems({ proxyUid: 1, excludeInboundPorts: [0, 70000] })).toHaveLength(2);
    expect(problems({ proxyUid: 1, inboundPort: 1, outboundPort: 1 })).toEqual([
      "inboundPort and outboundPort must differ",
    ]);
    expect(problems({ proxyUid: 1, captureUids: [1] })[0]).toMatch(/captureUids must not include/);
    expect(problems({ proxyUid: 1, excludeOutboundPorts: [15001] })[0]).toMatch(/sidecar's outbound port/);
    expect(problems({ proxyUid: 1, excludeInboundPorts: [22, 22] })).toEqual([
      "excludeInboundPorts: 22 is listed twice",
    ]);
    expect(problems({ proxyUid: 1, outbound: false, inboundPorts: [] })[0]).toMatch(/nothing to capture/);
    expect(problems({ proxyUid: 1, tproxy: { routeTable: 254 } })[0]).toMatch(/reserved routing table/);
    expect(problems({ proxyUid: 1, tproxy: { mark: { value: 3, mask: 1 } } })[0]).toMatch(
      /bits outside its mask/,
    );
  });

  it("rejects unknown keys instead of ignoring a typo", () => {
    expect(problems({ proxyUid: 1, excludeOutboundPort: [1] })[0]).toMatch(/excludeOutboundPort/);
  });

  it("keeps the fast path's mark bits apart from TPROXY's", () => {
    expect(problems({ proxyUid: 1, mode: "tproxy", fastPathMarkMask: 0x1ff })[0]).toMatch(
      /fastPathMarkMask and tproxy.mark must use different bits/,
    );
    expect(problems({ proxyUid: 1, mode: "tproxy", fastPathMarkMask: 0xf00000 })).toEqual([]);
  });
});
