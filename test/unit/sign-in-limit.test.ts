import { describe, expect, it } from "vitest";
import { SignInLimit } from "../../controlplane/http/sign-in-limit.ts";

describe("sign-in attempts per source", () => {
  it("allows `attempts` per window, then names the wait, and starts over in the next window", () => {
    let clock = 1_000_000;
    const limit = new SignInLimit({ attempts: 3, windowMs: 60_000, now: () => clock });
    expect([1, 2, 3].map(() => limit.take("198.18.0.5"))).toEqual([0, 0, 0]);
    expect(limit.take("198.18.0.5")).toBe(60);
    clock += 45_000;
    expect(limit.take("198.18.0.5")).toBe(15);
    expect(limit.take("198.18.0.6")).toBe(0);
    clock += 15_000;
    expect(limit.take("198.18.0.5")).toBe(0);
  });

  it("counts an IPv6 /64 as one source and an IPv4-mapped address as its IPv4 address", () => {
    const limit = new SignInLimit({ attempts: 1, now: () => 0 });
    expect(limit.take("2001:db8:1:2::10")).toBe(0);
    expect(limit.take("2001:db8:1:2::11")).toBeGreaterThan(0);
    expect(limit.take("198.18.0.7")).toBe(0);
    expect(limit.take("::ffff:198.18.0.7")).toBeGreaterThan(0);
  });

  it("keeps bounded memory under a flood of sources, forgetting the oldest", () => {
    const limit = new SignInLimit({ attempts: 1, maxSources: 100, now: () => 0 });
    for (let i = 0; i < 10_000; i++) limit.take(`198.18.${i >> 8}.${i & 255}`);
    expect(limit.size).toBe(100);
  });
});
