import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connect, createServer } from "node:net";
import { once } from "node:events";
import { OriginalDestinationError, getOriginalDestination } from "../../native/index.ts";
import { createNetns } from "../support/netns.ts";
import type { Netns } from "../support/netns.ts";
import { OutputLines, jsonLine } from "./fastpath-support/process-output.ts";

const PROBE = "test/e2e/fastpath-support/original-dst-probe.ts";

describe.sequential("native getOriginalDestination (SO_ORIGINAL_DST / IP6T_SO_ORIGINAL_DST)", () => {
  let ns: Netns;

  beforeAll(async () => {
    ns = await createNetns("origdst");
    // A veth pair with one end up gives the namespace routes for the test ranges (no dummy module
    // needed); both ends live in the namespace, so fixed names cannot collide.
    await ns.execOk(["ip", "link", "add", "veth0", "type", "veth", "peer", "name", "veth1"]);
    await ns.execOk(["ip", "link", "set", "veth1", "up"]);
    await ns.execOk(["ip", "addr", "add", "198.18.0.1/15", "dev", "veth0"]);
    await ns.execOk(["ip", "addr", "add", "2001:2::1/48", "dev", "veth0", "nodad"]);
    await ns.execOk(["ip", "link", "set", "veth0", "up"]);
  });

  afterAll(async () => {
    await ns?.destroy();
  });

  async function probe(cases: object[]): Promise<Record<string, unknown>[]> {
    const out = new OutputLines(
      ns.spawn([process.execPath, "--import", "tsx", PROBE, JSON.stringify(cases)]),
    );
    const code = await out.exit(20_000);
    expect(code, out.stderrText).toBe(0);
    return out.lines.map(jsonLine).filter((x): x is Record<string, unknown> => x !== undefined);
  }

  it("reads the IPv4 and IPv6 destinations a client dialled before nat REDIRECT", async () => {
    const results = await probe([
      { family: 4, address: "198.18.200.7", port: 8443, redirect: true },
      { family: 6, address: "2001:2::beef", port: 5432, redirect: true },
      { family: 4, address: "198.19.1.2", port: 80, redirect: true },
    ]);
    expect(results).toHaveLength(3);
    expect(results[0]?.result).toEqual({ address: "198.18.200.7", port: 8443 });
    expect(results[1]?.result).toEqual({ address: "2001:2::beef", port: 5432 });
    expect(results[2]?.result).toEqual({ address: "198.19.1.2", port: 80 });
  });

  it("reports the real local address for a connection that was not redirected", async () => {
    const results = await probe([{ family: 4, address: "127.0.0.1", port: 0, redirect: false }]);
    const r = results[0] as { listenPort: number; result: unknown };
    expect(r.result).toEqual({ address: "127.0.0.1", port: r.listenPort });
  });

  it("throws ENOENT, typed, for a connection conntrack does not track", async () => {
    const results = await probe([
      { family: 4, address: "127.0.0.1", port: 0, redirect: false, notrack: true },
    ]);
    expect(results[0]?.error).toMatchObject({
      typed: true,
      name: "OriginalDestinationError",
      code: "ENOENT",
    });
    expect(String((results[0]?.error as { meaning: string }).meaning)).toMatch(/not redirected/);
  });

  it("throws a typed error naming errno and meaning for a bad descriptor or family", async () => {
    expect(() => getOriginalDestination(1 << 20, 4)).toThrow(OriginalDestinationError);
    try {
      getOriginalDestination(1 << 20, 6);
    } catch (err) {
      expect(err).toBeInstanceOf(OriginalDestinationError);
      expect((err as OriginalDestinationError).code).toBe("EBADF");
      expect((err as OriginalDestinationError).message).toMatch(/not open/);
    }
    expect(() => getOriginalDestination(3, 5 as 4)).toThrow(RangeError);
    expect(() => getOriginalDestination(-1, 4)).toThrow(RangeError);

    const server = createServer();
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    const client = connect((server.address() as { port: number }).port, "127.0.0.1");
    await once(client, "connect");
    // The client socket is IPv4; asking it as IPv6 is a family mismatch the kernel rejects.
    const fd = (client as unknown as { _handle: { fd: number } })._handle.fd;
    expect(() => getOriginalDestination(fd, 6)).toThrow(
      /EOPNOTSUPP.*address family is not the requested one/,
    );
    client.destroy();
    server.close();
  });
});
