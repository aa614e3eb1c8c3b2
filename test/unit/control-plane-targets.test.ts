import { describe, expect, it } from "vitest";
import {
  controlPlaneProblem,
  unaryTargetFor,
  type AddressLookup,
} from "../../sidecar/agent/control-plane-targets.ts";

/** A resolver answering from a table, as /etc/hosts or DNS would. */
function table(entries: Record<string, string[]>): AddressLookup {
  return (host) => {
    const found = entries[host];
    if (!found) return Promise.reject(new Error(`getaddrinfo ENOTFOUND ${host}`));
    return Promise.resolve(found.map((address) => ({ address, family: address.includes(":") ? 6 : 4 })));
  };
}

describe("control-plane targets", () => {
  it("names the entry of a list that is not host:port", () => {
    expect(controlPlaneProblem("cp-0:15010,cp-1")).toBe('"cp-1" is not host:port');
    expect(controlPlaneProblem("cp-0:15010,cp-1:99999")).toBe('"cp-1:99999": port out of range');
    expect(controlPlaneProblem("cp-0:15010,[2001:db8::1]:15010")).toBeUndefined();
  });

  it("keeps a single name for gRPC's own resolver, and lists of addresses as they are", async () => {
    const none = table({});
    expect(await unaryTargetFor(["cp.mesh:15010"], none)).toBe("cp.mesh:15010");
    expect(await unaryTargetFor(["198.18.0.1:15010", "198.18.0.2:15010"], none)).toBe(
      "ipv4:198.18.0.1:15010,198.18.0.2:15010",
    );
    expect(await unaryTargetFor(["[2001:db8::1]:15010", "[2001:db8::2]:15010"], none)).toBe(
      "ipv6:[2001:db8::1]:15010,[2001:db8::2]:15010",
    );
  });

  it("resolves each name of a list, preferring the family every name has", async () => {
    const lookup = table({
      "cp-0.mesh": ["198.18.0.1", "2001:db8::1"],
      "cp-1.mesh": ["198.18.0.2", "198.18.0.3"],
      "cp-v6.mesh": ["2001:db8::9"],
    });
    expect(await unaryTargetFor(["cp-0.mesh:15010", "cp-1.mesh:15011"], lookup)).toBe(
      "ipv4:198.18.0.1:15010,198.18.0.2:15011,198.18.0.3:15011",
    );
    expect(await unaryTargetFor(["cp-0.mesh:15010", "cp-v6.mesh:15010"], lookup)).toBe(
      "ipv6:[2001:db8::1]:15010,[2001:db8::9]:15010",
    );
    expect(await unaryTargetFor(["cp-1.mesh:15010", "198.18.0.1:15010"], lookup)).toBe(
      "ipv4:198.18.0.2:15010,198.18.0.3:15010,198.18.0.1:15010",
    );
  });

  it("refuses a list naming a host that does not resolve, or families that do not meet", async () => {
    const lookup = table({ "cp-0.mesh": ["198.18.0.1"], "cp-v6.mesh": ["2001:db8::9"] });
    await expect(unaryTargetFor(["cp-0.mesh:15010", "gone.mesh:15010"], lookup)).rejects.toThrow(
      "control plane gone.mesh:15010: gone.mesh does not resolve (getaddrinfo ENOTFOUND gone.mesh)",
    );
    await expect(unaryTargetFor(["cp-0.mesh:15010", "cp-v6.mesh:15010"], lookup)).rejects.toThrow(
      "no address family (IPv4 or IPv6) that every entry resolves to",
    );
    await expect(unaryTargetFor(["198.18.0.1:15010", "[2001:db8::1]:15010"], lookup)).rejects.toThrow(
      "a list's addresses must all be IPv4 or all IPv6",
    );
  });

  it("resolves through the host's resolver by default", async () => {
    expect(await unaryTargetFor(["localhost:15010", "127.0.0.1:15011"])).toMatch(
      /^ipv4:127\.0\.0\.1:15010,127\.0\.0\.1:15011$/,
    );
  });
});
