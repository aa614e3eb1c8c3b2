import { describe, expect, it } from "vitest";
import { isLoopback } from "../../sidecar/admin/admin.ts";
import { SidecarConfigError, parseSidecarConfig } from "../../sidecar/config.ts";

describe("sidecar configuration", () => {
  it("fills defaults: explicit mode and the conventional ports", () => {
    const c = parseSidecarConfig({});
    expect(c.mode).toBe("explicit");
    expect(c.outbound.port).toBe(15001);
    expect(c.inbound.port).toBe(15006);
    expect(c.admin).toEqual({ host: "127.0.0.1", port: 15000, maxLabelSets: 1000 });
  });

  it("takes another admin address, for a cluster's Prometheus to scrape", () => {
    expect(parseSidecarConfig({ admin: { host: "0.0.0.0" } }).admin.host).toBe("0.0.0.0");
    expect(() => parseSidecarConfig({ admin: { maxLabelSets: 0 } })).toThrow(/admin\.maxLabelSets/);
  });

  it("serves /config_dump to loopback clients only, whatever the admin address", () => {
    for (const a of ["127.0.0.1", "127.8.9.1", "::1", "::ffff:127.0.0.1"]) expect(isLoopback(a)).toBe(true);
    for (const a of ["198.18.0.1", "::ffff:198.18.0.1", "fe80::1", "::", "", undefined])
      expect(isLoopback(a)).toBe(false);
  });

  it("names the field at fault", () => {
    expect(() =>
      parseSidecarConfig({ outbound: { targets: [{ port: 1, destination: { host: "x", port: 0 } }] } }),
    ).toThrow(SidecarConfigError);
    expect(() =>
      parseSidecarConfig({ outbound: { targets: [{ port: 1, destination: { host: "x", port: 0 } }] } }),
    ).toThrow(/outbound\.targets\.0\.destination\.port/);
    expect(() => parseSidecarConfig({ inbound: { prot: 1 } })).toThrow(/inbound/);
  });
});
