import { once } from "node:events";
import type { AddressInfo } from "node:net";
import { connect, createServer } from "node:tls";
import type { TLSSocket } from "node:tls";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { revocationListResource, trustBundleResource } from "../../controlplane/xds/sigil.ts";
import { createXdsService } from "../../controlplane/xds/service.ts";
import type { XdsService } from "../../controlplane/xds/service.ts";
import type { TrustBundle } from "../../core/svid/bundle.ts";
import { bundleRootsPem } from "../../core/svid/bundle.ts";
import type { RevocationList } from "../../core/svid/revocation.ts";
import { RevocationIndex } from "../../core/svid/revocation.ts";
import { verifyTlsPeer } from "../../core/svid/tls.ts";
import { SvidVerificationError } from "../../core/svid/verify.ts";
import {
  revocationListFromResource,
  revocationListSpec,
  trustBundleFromResource,
  trustBundleSpec,
} from "../../core/svid/xds-resources.ts";
import { XdsClient } from "../../xds/client.ts";
import { defaultTypeRegistry } from "../../xds/registry.ts";
import { REVOCATION_LIST, TRUST_BUNDLE } from "../../xds/type-urls.ts";
import { RotationManager } from "../../sidecar/identity/rotation.ts";
import { tlsOptionsFor } from "../support/tls-context.ts";
import type { IdentityHarness } from "../support/identity-harness.ts";
import { startIdentityHarness } from "../support/identity-harness.ts";

let h: IdentityHarness;
let xds: XdsService;
const closers: (() => void)[] = [];

function publishRevocations(list: RevocationList): void {
  xds.publisher.setShared(REVOCATION_LIST, [revocationListResource(xds.registry, revocationListSpec(list))]);
}
function publishBundle(bundle: TrustBundle): void {
  xds.publisher.setShared(TRUST_BUNDLE, [trustBundleResource(xds.registry, trustBundleSpec(bundle))]);
}

beforeAll(async () => {
  h = await startIdentityHarness();
  xds = createXdsService();
  h.server.addService(xds.ads.definition, xds.ads.implementation);
  // The control plane's wiring: identity state changes become xDS pushes.
  publishBundle(h.plane.bundle());
  publishRevocations(h.plane.revocations());
  h.plane.registry.on("revocations", publishRevocations);
  h.plane.ca.on("bundle", publishBundle);
});
afterAll(async () => {
  for (const close of closers) close();
  await h?.close();
});

/** A sidecar's view: its SVID from the identity service, bundle and revocations from xDS. */
async function sidecar(name: string) {
  const { token } = await h.plane.tokens.create({ name, labels: { app: name }, ttlSeconds: 600 });
  const identity = new RotationManager({
    client: h.newClient(),
    trustDomain: "sigil.local",
    bootstrapProof: async () => ({ joinToken: token }),
  });
  await identity.start();
  closers.push(() => identity.stop());
  const state = { revocations: RevocationIndex.empty("sigil.local") };
  const client = new XdsClient({
    target: h.address,
    credentials: grpc.credentials.createSsl(Buffer.from(bundleRootsPem(h.plane.bundle()))),
    channelOptions: { "grpc.ssl_target_name_override": "localhost", "grpc.use_local_subchannel_pool": 1 },
    node: { id: `sidecar-${name}` },
    protocol: "sotw",
    registry: defaultTypeRegistry(),
  });
  client.subscribe(REVOCATION_LIST, {
    handler: (update) => {
      for (const r of update.resources.values())
        state.revocations = new RevocationIndex(revocationListFromResource(r.message));
    },
  });
  client.subscribe(TRUST_BUNDLE, {
    handler: (update) => {
      for (const r of update.resources.values()) identity.setTrustBundle(trustBundleFromResource(r.message));
    },
  });
  const ready = once(client, "ack", { signal: AbortSignal.timeout(5000) });
  client.start();
  await ready;
  closers.push(() => client.close());
  return { identity, client, state };
}

describe("revocation pushed over xDS", () => {
  it("peers refuse a revoked workload once `workload revoke` is pushed, before its certificate expires", async () => {
    const api = await sidecar("api");
    const web = await sidecar("web");
    const server = createServer({
      ...tlsOptionsFor(api.identity.current()),
      requestCert: true,
      rejectUnauthorized: false,
    });
    const verdicts: (string | SvidVerificationError)[] = [];
    server.on("secureConnection", (socket: TLSSocket) => {
      try {
        const peer = verifyTlsPeer(socket, {
          bundle: api.identity.current().bundle,
          purpose: "client",
          revocations: api.state.revocations,
        });
        verdicts.push(peer.identity.spiffeId);
        socket.end("ok");
      } catch (err) {
        verdicts.push(err as SvidVerificationError);
        socket.destroy();
      }
    });
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    closers.push(() => server.close());
    const dial = async () => {
      const socket = connect({
        host: "127.0.0.1",
        port: (server.address() as AddressInfo).port,
        ...tlsOptionsFor(web.identity.current()),
        rejectUnauthorized: false,
        checkServerIdentity: () => undefined,
      });
      socket.on("error", () => undefined);
      socket.resume();
      await once(socket, "close", { signal: AbortSignal.timeout(5000) });
    };

    await dial();
    expect(verdicts[0]).toBe("spiffe://sigil.local/workload/web");

    // Bounded only so a broken push ends the test; push latency is not asserted on a shared machine.
    const pushed = once(api.client, "ack", { signal: AbortSignal.timeout(15_000) });
    await h.plane.registry.revoke(
      "spiffe://sigil.local/workload/web",
      "key compromised",
      h.plane.ca.maxLeafTtlSeconds,
    );
    await pushed;
    expect(api.state.revocations.revokingWorkload("spiffe://sigil.local/workload/web")?.reason).toBe(
      "key compromised",
    );
    expect(web.identity.current().notAfter.getTime()).toBeGreaterThan(Date.now());

    await dial();
    const refused = verdicts[1];
    expect(refused).toBeInstanceOf(SvidVerificationError);
    expect((refused as SvidVerificationError).reason).toBe("revoked");
    expect((refused as SvidVerificationError).message).toMatch(
      /workload\/web was revoked at .*key compromised/,
    );
  });

  it("a CA rotation reaches sidecars as a new trust bundle holding both roots", async () => {
    const db = await sidecar("db");
    const updated = once(db.identity, "bundle", { signal: AbortSignal.timeout(2000) });
    await h.plane.ca.rotate({ activateInSeconds: 30 });
    const [bundle] = (await updated) as [TrustBundle];
    expect(bundle.x509Authorities).toHaveLength(2);
    expect(db.identity.current().bundle.sequence).toBe(h.plane.bundle().sequence);
  });
});
