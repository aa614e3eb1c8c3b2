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
  pair = await startPair({ appPorts: [], configB: { handshakeTimeoutMs: HANDSHAKE_TIMEOUT_MS } });
});

afterAll(async () => {
  await pair?.close();
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
