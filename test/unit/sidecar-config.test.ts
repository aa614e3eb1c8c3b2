import { describe, expect, it } from "vitest";
import { SidecarConfigError, parseSidecarConfig } from "../../sidecar/config.ts";

describe("sidecar configuration", () => {
  it("fills defaults: explicit mode and the conventional ports", () => {
    const c = parseSidecarConfig({});
    expect(c.mode).toBe("explicit");
    expect(c.outbound.port).toBe(15001);
    expect(c.inbound.port).toBe(15006);
    expect(c.admin).toEqual({ host: "127.0.0.1", port: 15000 });
  });

  it("keeps the admin server on loopback", () => {
    expect(() => parseSidecarConfig({ admin: { host: "0.0.0.0" } })).toThrow(
      /admin.host: the admin server listens on loopback only/,
    );
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
