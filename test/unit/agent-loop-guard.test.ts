/** Captured mode: a connection whose original destination is the sidecar's own listener is refused. */
import type { Socket } from "node:net";
import { describe, expect, it } from "vitest";
import { guardOriginalDestination, localAddressTest, LoopError } from "../../sidecar/proxy/loop-guard.ts";

const socket = {} as Socket;
const own = new Set([15001, 15006, 15000]);

function guarded(address: string, port: number) {
  return guardOriginalDestination(
    () => ({ address, port }),
    () => own,
    localAddressTest(["198.18.0.2"]),
  )(socket);
}

describe("guardOriginalDestination", () => {
  it.each([
    ["127.0.0.1", 15001],
    ["::1", 15006],
    ["::ffff:127.0.0.1", 15000],
    ["198.18.0.2", 15006],
  ])("refuses %s:%i, the sidecar's own listener", (address, port) => {
    expect(() => guarded(address, port)).toThrow(LoopError);
  });

  it.each([
    ["198.18.0.3", 15006],
    ["127.0.0.1", 8080],
    ["198.18.0.2", 8080],
  ])("passes %s:%i", (address, port) => {
    expect(guarded(address, port)).toEqual({ address, port });
  });
});
