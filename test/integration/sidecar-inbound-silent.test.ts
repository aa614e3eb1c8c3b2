import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import net from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { SidecarPair } from "../support/sidecar-mesh.ts";
import { startPair } from "../support/sidecar-mesh.ts";

/**
 * Where only mesh callers are served (explicit mode, no plaintext port), a client whose TLS hello
 * does not come within the handshake timeout is a mesh handshake that did not happen: a legitimate
 * caller too slow to send it (a load generator sharing the cores with 2,000 concurrent handshakes)
 * looks exactly like this. Its refusal says so ("handshake-timeout"), as a slow handshake after the
 * hello does, instead of "mtls-required", which names a plaintext client that was never there.
 *
 * A burst of new connections must not make such late hellos itself: with Node's default listen
 * backlog (511) a burst of 2,000 overflowed the kernel's accept queue, the overflow's clients waited
 * out retransmission backoff before their hellos arrived, and the bound refused them.
 */

const HANDSHAKE_TIMEOUT_MS = 200;

let pair: SidecarPair;

/** Resolves once the sidecar has closed the connection (a reset included). */
const closed = (socket: net.Socket): Promise<void> =>
  new Promise((resolve) => {
    socket.on("error", () => undefined);
    socket.once("close", () => resolve());
  });

beforeAll(async () => {
  pair = await startPair({
    appPorts: [],
    configB: { handshakeTimeoutMs: HANDSHAKE_TIMEOUT_MS, listenBacklog: 2048 },
  });
});

afterAll(async () => {
  await pair?.close();
});

/** The accept queue the kernel holds for a loopback listening port: `ss` shows it as Send-Q. */
function acceptQueue(port: number): number {
  const line = execFileSync("ss", ["-ltnH", `sport = :${port}`], { encoding: "utf8" }).trim();
  const sendQ = line.split(/\s+/)[2];
  if (sendQ === undefined) throw new Error(`no listening socket on port ${port}: ${line}`);
  return Number(sendQ);
}

describe("inbound listener: room for a burst of new connections", () => {
  it("asks the kernel for a 4,096-connection accept queue by default, and the configured size otherwise", () => {
    const somaxconn = Number(readFileSync("/proc/sys/net/core/somaxconn", "utf8"));
    expect(acceptQueue(pair.a.sidecar.inbound.port)).toBe(Math.min(4096, somaxconn));
    expect(acceptQueue(pair.b.sidecar.inbound.port)).toBe(Math.min(2048, somaxconn));
  });
});

describe("inbound, mesh only: a client that sends nothing", () => {
  it("is refused as a handshake timeout, not as a plaintext client", async () => {
    const client = net.connect(pair.b.sidecar.inbound.port, "127.0.0.1");
    try {
      // Silent until the sidecar closes it: the deadline is the sidecar's, the test only waits.
      await closed(client);
      const flow = await pair.b.flows.next((r) => r.verdict === "deny");
      expect(flow.reason).toBe(
        `peer-rejected: handshake-timeout: no complete TLS ClientHello within ${HANDSHAKE_TIMEOUT_MS} ms`,
      );
      expect(flow.encrypted).toBe(false);
    } finally {
      client.destroy();
    }
  });

  it("plaintext bytes there are still refused as mtls-required", async () => {
    const client = net.connect(pair.b.sidecar.inbound.port, "127.0.0.1", () =>
      client.write("GET / HTTP/1.1\r\nHost: api\r\n\r\n"),
    );
    try {
      await closed(client);
      const flow = await pair.b.flows.next((r) => r.reason.startsWith("mtls-required"));
      expect(flow.reason).toBe("mtls-required: no application port takes plaintext here");
    } finally {
      client.destroy();
    }
  });
});
