import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { adsServiceDefinition, nodeToWire, type SotwResponse } from "../../xds/wire.ts";
import { Snapshot } from "../../xds/snapshot.ts";
import type { AckEvent } from "../../xds/server.ts";
import { TRUST_BUNDLE } from "../../xds/type-urls.ts";
import { nextEvent, startAdsFixture, type AdsFixture } from "./xds-harness.ts";

/**
 * Wildcard state-of-the-world responses are encoded once per resource set and written to every
 * stream that needs them, nonce included; nonces must still never repeat on one stream.
 */

let fx: AdsFixture;
beforeAll(async () => {
  fx = await startAdsFixture();
});
afterAll(async () => {
  await fx?.close();
});

const bundle = (sequence: number) =>
  fx.registry.encode(TRUST_BUNDLE, {
    trust_domain: "shared.test",
    x509_roots_pem: [`root-${sequence}`],
    sequence,
  });

/** A bare SotW stream that records every response, with a wait for the n-th one. */
function stream(id: string) {
  const client = new grpc.Client(
    `127.0.0.1:${fx.grpc.port}`,
    grpc.credentials.createSsl(Buffer.from(fx.cert.certPem)),
    { "grpc.ssl_target_name_override": "localhost" },
  );
  const def = adsServiceDefinition.StreamAggregatedResources;
  if (!def) throw new Error("no ADS method");
  const call = client.makeBidiStreamRequest(
    def.path,
    def.requestSerialize as (v: object) => Buffer,
    def.responseDeserialize as (b: Buffer) => SotwResponse,
  );
  const responses: SotwResponse[] = [];
  const waiting: { n: number; resolve: () => void }[] = [];
  call.on("data", (r: SotwResponse) => {
    responses.push(r);
    for (const w of waiting.splice(0)) {
      if (responses.length >= w.n) w.resolve();
      else waiting.push(w);
    }
  });
  call.on("error", () => undefined);
  const count = (n: number, timeoutMs = 5_000) =>
    new Promise<void>((resolve, reject) => {
      if (responses.length >= n) return resolve();
      const timer = setTimeout(() => reject(new Error(`${id}: fewer than ${n} responses`)), timeoutMs);
      waiting.push({
        n,
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
      });
    });
  call.write({ node: nodeToWire({ id }), type_url: TRUST_BUNDLE });
  return {
    call,
    responses,
    count,
    close: () => {
      call.cancel();
      client.close();
    },
  };
}

describe("shared state-of-the-world responses", () => {
  it("carry one nonce to every stream of a set, are ACKed per stream, and never repeat a nonce on a stream", async () => {
    const shared = Snapshot.of([bundle(1)]);
    fx.cache.set("shared-a", shared);
    fx.cache.set("shared-b", shared);
    const a = stream("shared-a");
    const b = stream("shared-b");
    await Promise.all([a.count(1), b.count(1)]);
    const [ra, rb] = [a.responses[0] as SotwResponse, b.responses[0] as SotwResponse];
    expect(ra.nonce).toBe(rb.nonce);
    expect(ra.version_info).toBe(rb.version_info);

    const ackA = nextEvent<AckEvent>(fx.ads, "ack", (e) => e.nodeId === "shared-a");
    const ackB = nextEvent<AckEvent>(fx.ads, "ack", (e) => e.nodeId === "shared-b");
    for (const [s, r] of [
      [a, ra],
      [b, rb],
    ] as const)
      s.call.write({ type_url: TRUST_BUNDLE, version_info: r.version_info, response_nonce: r.nonce });
    expect((await ackA).nonce).toBe(ra.nonce);
    expect((await ackB).nonce).toBe(rb.nonce);

    // Stream a narrows to a name and widens back to wildcard: the same set is sent again, and
    // must come with a nonce a has not seen, so the first response's nonce is stale from then on.
    a.call.write({
      type_url: TRUST_BUNDLE,
      version_info: ra.version_info,
      response_nonce: ra.nonce,
      resource_names: ["shared.test"],
    });
    await a.count(2);
    const named = a.responses[1] as SotwResponse;
    a.call.write({
      type_url: TRUST_BUNDLE,
      version_info: named.version_info,
      response_nonce: named.nonce,
      resource_names: ["*"],
    });
    await a.count(3);
    const again = a.responses[2] as SotwResponse;
    expect(again.version_info).toBe(ra.version_info);
    expect(new Set(a.responses.map((r) => r.nonce)).size).toBe(3);

    const stale = nextEvent<AckEvent>(fx.ads, "stale", (e) => e.nodeId === "shared-a");
    a.call.write({ type_url: TRUST_BUNDLE, version_info: ra.version_info, response_nonce: ra.nonce });
    expect((await stale).nonce).toBe(ra.nonce);

    // A change reaches both streams as one shared response again.
    const next = Snapshot.of([bundle(2)]);
    fx.cache.set("shared-a", next);
    fx.cache.set("shared-b", next);
    await Promise.all([a.count(4), b.count(2)]);
    expect((a.responses[3] as SotwResponse).nonce).toBe((b.responses[1] as SotwResponse).nonce);
    expect((a.responses[3] as SotwResponse).version_info).not.toBe(ra.version_info);
    a.close();
    b.close();
  });
});
