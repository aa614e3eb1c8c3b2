import { describe, expect, it } from "vitest";
import { isLoopbackHost } from "../../controlplane/control-plane.ts";

describe("HTTP API listen address", () => {
  it("counts loopback addresses and localhost as staying on the host, anything else as exposed", () => {
    for (const host of ["127.0.0.1", "127.1.2.3", "::1", "localhost"])
      expect(isLoopbackHost(host)).toBe(true);
    for (const host of [
      "0.0.0.0",
      "::",
      "198.18.0.1",
      "127.0.0.1.example",
      "localhost.example",
      "::ffff:10.0.0.1",
    ])
      expect(isLoopbackHost(host)).toBe(false);
  });
});
