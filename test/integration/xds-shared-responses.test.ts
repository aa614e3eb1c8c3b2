import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { adsServiceDefinition, nodeToWire, type DeltaResponse, type SotwResponse } from "../../xds/wire.ts";
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

const bundle = (sequence: number, domain = "shared.test") =>
  fx.registry.encode(TRUST_BUNDLE, {
    trust_domain: domain,
    x509_roots_pem: [`root-${sequence}`],
    sequence,
  });

/** A bare ADS stream (wildcard on the trust bundle type) that records every response, with a wait for the n-th one. */
function stream<R extends SotwResponse | DeltaResponse = SotwResponse>(
  id: string,
  protocol: "sotw" | "delta" = "sotw",
) {
  const client = new grpc.Client(
    `127.0.0.1:${fx.grpc.port}`,
    grpc.credentials.createSsl(Buffer.from(fx.cert.certPem)),
    { "grpc.ssl_target_name_override": "localhost" },
  );
  const def =
    adsServiceDefinition[protocol === "sotw" ? "StreamAggregatedResources" : "DeltaAggregatedResources"];
  if (!def) throw new Error("no ADS method");
  const call = client.makeBidiStreamRequest(
    def.path,
    def.requestSerialize as (v: object) => Buffer,
    def.responseDeserialize as (b: Buffer) => R,
  );
  const responses: R[] = [];
  const waiting: { n: number; resolve: () => void }[] = [];
  call.on("data", (r: R) => {
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
  call.write(
    protocol === "sotw"
      ? { node: nodeToWire({ id }), type_url: TRUST_BUNDLE }
      : { node: nodeToWire({ id }), type_url: TRUST_BUNDLE, resource_names_subscribe: ["*"] },
  );
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

describe("shared delta responses", () => {
  it("take every plain wildcard stream from one set to the next with one response, updates and removals alike", async () => {
    const first = Snapshot.of([bundle(1, "d1.test"), bundle(1, "d2.test")]);
    fx.cache.set("delta-a", first);
    fx.cache.set("delta-b", first);
    const a = stream<DeltaResponse>("delta-a", "delta");
    const b = stream<DeltaResponse>("delta-b", "delta");
    await Promise.all([a.count(1), b.count(1)]);
    for (const s of [a, b]) {
      const r = s.responses[0] as DeltaResponse;
      expect(r.resources.map((x) => x.name).sort()).toEqual(["d1.test", "d2.test"]);
      s.call.write({ type_url: TRUST_BUNDLE, response_nonce: r.nonce });
    }

    // d1 changes, d2 goes away: both streams get the same bytes, carrying exactly that.
    const second = Snapshot.of([bundle(2, "d1.test")]);
    fx.cache.set("delta-a", second);
    fx.cache.set("delta-b", second);
    await Promise.all([a.count(2), b.count(2)]);
    const [ra, rb] = [a.responses[1] as DeltaResponse, b.responses[1] as DeltaResponse];
    expect(ra.nonce).toBe(rb.nonce);
    expect(ra.resources.map((x) => x.name)).toEqual(["d1.test"]);
    expect(ra.removed_resources).toEqual(["d2.test"]);
    expect(rb.resources.map((x) => x.name)).toEqual(["d1.test"]);
    expect(rb.removed_resources).toEqual(["d2.test"]);

    // Stream a adds a named subscription (to a name that does not exist, which needs no answer
    // under a wildcard): it leaves the shared path, and the next change still reaches both
    // streams correctly, with d2 back.
    const acked = nextEvent<AckEvent>(fx.ads, "ack", (e) => e.nodeId === "delta-a");
    a.call.write({
      type_url: TRUST_BUNDLE,
      response_nonce: ra.nonce,
      resource_names_subscribe: ["d9.test"],
    });
    await acked;
    const third = Snapshot.of([bundle(2, "d1.test"), bundle(3, "d2.test")]);
    fx.cache.set("delta-a", third);
    fx.cache.set("delta-b", third);
    await Promise.all([a.count(3), b.count(3)]);
    const [la, lb] = [a.responses[2] as DeltaResponse, b.responses[2] as DeltaResponse];
    expect(la.resources.map((x) => x.name)).toEqual(["d2.test"]);
    expect(lb.resources.map((x) => x.name)).toEqual(["d2.test"]);
    expect(lb.removed_resources).toEqual([]);
    expect(la.nonce).not.toBe(lb.nonce);
    expect(new Set(a.responses.map((r) => r.nonce)).size).toBe(a.responses.length);
    a.close();
    b.close();
  });
});
