import { on, once } from "node:events";
import { connect, createServer } from "node:tls";
import type { TLSSocket } from "node:tls";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { verifyTlsPeer } from "../../core/svid/tls.ts";
import type { CredentialSource } from "../../sidecar/inputs/sources.ts";
import { RotationManager } from "../../sidecar/identity/rotation.ts";
import type { WorkloadCredentials } from "../../sidecar/identity/rotation.ts";
import { tlsOptionsFor } from "../support/tls-context.ts";
import type { IdentityHarness } from "../support/identity-harness.ts";
import { startIdentityHarness } from "../support/identity-harness.ts";

let h: IdentityHarness;
const managers: RotationManager[] = [];

beforeAll(async () => {
  h = await startIdentityHarness();
});
afterAll(async () => {
  for (const m of managers) m.stop();
  await h?.close();
});

async function workload(name: string, ttlSeconds: number): Promise<RotationManager> {
  const { token } = await h.plane.tokens.create({ name, labels: { app: name }, ttlSeconds: 600 });
  const manager = new RotationManager({
    client: h.newClient(),
    trustDomain: "sigil.local",
    bootstrapProof: async () => ({ joinToken: token }),
    ttlSeconds,
  });
  managers.push(manager);
  await manager.start();
  return manager;
}

const leafOf = (creds: WorkloadCredentials) => creds.certChain[0] as Buffer;

/** Waits for `count` rotations of `manager`, bounded by `timeoutMs`. */
async function rotations(
  manager: RotationManager,
  count: number,
  timeoutMs: number,
): Promise<WorkloadCredentials[]> {
  const seen: WorkloadCredentials[] = [];
  for await (const [creds] of on(manager, "rotated", { signal: AbortSignal.timeout(timeoutMs) })) {
    seen.push(creds as WorkloadCredentials);
    if (seen.length === count) break;
  }
  return seen;
}

describe("SVID rotation", () => {
  it("schedules renewal at half-life with jitter and keeps a long-lived mTLS connection through two rotations", async () => {
    const server = await workload("api", 4);
    const client = await workload("web", 600);
    const first = server.current();

    const tlsServer = createServer({ ...tlsOptionsFor(first), requestCert: true, rejectUnauthorized: false });
    server.on("rotated", (creds) => tlsServer.setSecureContext(tlsOptionsFor(creds)));
    const serverPeers: string[] = [];
    tlsServer.on("secureConnection", (socket: TLSSocket) => {
      const peer = verifyTlsPeer(socket, { bundle: server.current().bundle, purpose: "client" });
      serverPeers.push(peer.identity.spiffeId);
      socket.on("data", (d) => socket.write(`echo:${d.toString()}`));
    });
    tlsServer.listen(0, "127.0.0.1");
    await once(tlsServer, "listening");
    const port = (tlsServer.address() as AddressInfo).port;

    const open = async () => {
      const creds = client.current();
      const socket = connect({
        host: "127.0.0.1",
        port,
        ...tlsOptionsFor(creds),
        rejectUnauthorized: false,
        checkServerIdentity: () => undefined,
      });
      await once(socket, "secureConnect");
      const peer = verifyTlsPeer(socket, { bundle: creds.bundle, purpose: "server" });
      return { socket, peer };
    };
    const roundTrip = async (socket: TLSSocket, text: string) => {
      const reply = once(socket, "data", { signal: AbortSignal.timeout(5000) });
      socket.write(text);
      return ((await reply)[0] as Buffer).toString();
    };

    try {
      const longLived = await open();
      expect(longLived.peer.leaf.raw.equals(leafOf(first))).toBe(true);
      expect(await roundTrip(longLived.socket, "before")).toBe("echo:before");

      const [second, third] = await rotations(server, 2, 15_000);
      for (const [prev, next] of [
        [first, second],
        [second, third],
      ] as [WorkloadCredentials, WorkloadCredentials][]) {
        // 4 s lifetime: renewal at 2 s ± 0.2 s; notBefore has one-second resolution.
        const renewedAfter = next.notBefore.getTime() - prev.notBefore.getTime();
        expect(renewedAfter).toBeGreaterThanOrEqual(1000);
        expect(renewedAfter).toBeLessThanOrEqual(3000);
        expect(leafOf(next).equals(leafOf(prev))).toBe(false);
        expect(next.privateKeyPem).not.toBe(prev.privateKeyPem);
      }

      expect(await roundTrip(longLived.socket, "after")).toBe("echo:after");
      expect(longLived.socket.destroyed).toBe(false);

      const fresh = await open();
      expect(fresh.peer.leaf.raw.equals(leafOf(third as WorkloadCredentials))).toBe(true);
      expect(fresh.peer.leaf.raw.equals(leafOf(first))).toBe(false);
      expect(fresh.peer.identity.spiffeId).toBe("spiffe://sigil.local/workload/api");
      expect(await roundTrip(fresh.socket, "new")).toBe("echo:new");
      expect(serverPeers).toEqual(["spiffe://sigil.local/workload/web", "spiffe://sigil.local/workload/web"]);
      longLived.socket.destroy();
      fresh.socket.destroy();
    } finally {
      tlsServer.close();
    }
  });

  it("renewNow rotates on demand, concurrent calls share one request, and the data path hears of it", async () => {
    const m = await workload("ondemand", 600);
    // The rotation manager is the sidecar data path's credential source as it is.
    const source: CredentialSource = m;
    let notified = 0;
    source.on("rotate", () => notified++);
    const before = m.current();
    const [a, b] = await Promise.all([m.renewNow(), m.renewNow()]);
    expect(a).toBe(b);
    expect(a.certChain[0]?.equals(before.certChain[0] as Buffer)).toBe(false);
    expect(m.current()).toBe(a);
    expect(notified).toBe(1);
    expect(source.current().certChainPem).toBe(a.certChainPem);
  });
});
