import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { AckEvent } from "../../xds/server.ts";
import { Snapshot } from "../../xds/snapshot.ts";
import { CLUSTER, LISTENER, TRUST_BUNDLE } from "../../xds/type-urls.ts";
import { NOTHING_VERSION } from "../../xds/unserved.ts";
import { adsServiceDefinition, nodeToWire, type DeltaResponse, type SotwResponse } from "../../xds/wire.ts";
import { nextEvent, startAdsFixture, type AdsFixture } from "./xds-harness.ts";

/**
 * What a subscription is owed: a wildcard subscription is answered even when the node has nothing
 * of its type (Envoy's initialization waits for that answer).
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
    trust_domain: "s.test",
    x509_roots_pem: [`root-${sequence}`],
    sequence,
  });

const cluster = (name: string) =>
  fx.registry.encode(CLUSTER, { name, type: "EDS", eds_cluster_config: { eds_config: { ads: {} } } });

/** A bare ADS stream whose responses are taken one by one, in the order they arrived. */
function openStream<R extends SotwResponse | DeltaResponse>(protocol: "sotw" | "delta") {
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
  call.on("error", () => undefined);
  const arrived: R[] = [];
  let waiter: ((r: R) => void) | undefined;
  call.on("data", (r: R) => {
    if (waiter) {
      const w = waiter;
      waiter = undefined;
      w(r);
    } else arrived.push(r);
  });
  const status = new Promise<grpc.StatusObject>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("the stream did not end within 10 s")), 10_000);
    timer.unref();
    call.on("status", (st: grpc.StatusObject) => {
      clearTimeout(timer);
      resolve(st);
    });
  });
  status.catch(() => undefined);
  return {
    write: (req: object) => call.write(req),
    /** The next response not taken yet; rejects if none arrives within `timeoutMs`. */
    next(timeoutMs = 5_000): Promise<R> {
      const ready = arrived.shift();
      if (ready) return Promise.resolve(ready);
      return new Promise<R>((resolve, reject) => {
        const timer = setTimeout(() => {
          waiter = undefined;
          reject(new Error(`no response within ${timeoutMs} ms`));
        }, timeoutMs);
        waiter = (r) => {
          clearTimeout(timer);
          resolve(r);
        };
      });
    },
    /** How the stream ended; rejects if it is still open 10 s after it was opened. */
    status,
    close() {
      call.cancel();
      client.close();
    },
  };
}

const ackOf = (id: string, typeUrl: string, nonce: string) =>
  nextEvent<AckEvent>(fx.ads, "ack", (e) => e.nodeId === id && e.typeUrl === typeUrl && e.nonce === nonce);

const typeStatus = (id: string, typeUrl: string) =>
  fx.ads
    .status()
    .find((st) => st.nodeId === id)
    ?.types.find((t) => t.typeUrl === typeUrl);

describe("a wildcard subscription to a served type the node has none of", () => {
  it("delta: is answered at once with one empty response, then follows the snapshot", async () => {
    const id = "delta-no-clusters";
    // The node has resources, just none of the wildcard types.
    fx.cache.set(id, Snapshot.of([bundle(1)]));
    const s = openStream<DeltaResponse>("delta");
    s.write({ node: nodeToWire({ id }), type_url: CLUSTER, resource_names_subscribe: ["*"] });
    // A first request without names is a wildcard subscription too.
    s.write({ type_url: LISTENER });
    s.write({ type_url: TRUST_BUNDLE, resource_names_subscribe: ["*"] });

    const clusters = await s.next();
    expect(clusters).toMatchObject({
      type_url: CLUSTER,
      system_version_info: NOTHING_VERSION,
      resources: [],
      removed_resources: [],
    });
    expect(clusters.nonce).not.toBe("");
    const listeners = await s.next();
    expect(listeners).toMatchObject({ type_url: LISTENER, resources: [], removed_resources: [] });
    expect(listeners.nonce).not.toBe(clusters.nonce);
    const bundles = await s.next();
    expect(bundles.type_url).toBe(TRUST_BUNDLE);
    expect(bundles.resources.map((r) => r.name)).toEqual(["s.test"]);

    const acked = Promise.all([
      ackOf(id, CLUSTER, clusters.nonce),
      ackOf(id, LISTENER, listeners.nonce),
      ackOf(id, TRUST_BUNDLE, bundles.nonce),
    ]);
    s.write({ type_url: CLUSTER, response_nonce: clusters.nonce });
    s.write({ type_url: LISTENER, response_nonce: listeners.nonce });
    s.write({ type_url: TRUST_BUNDLE, response_nonce: bundles.nonce });
    await acked;
    expect(typeStatus(id, CLUSTER)).toMatchObject({ subscription: "*", resources: 0, state: "acked" });

    // The empty answer is given once: a change that leaves the node without clusters or listeners
    // reaches only the bundle subscription.
    fx.cache.set(id, Snapshot.of([bundle(2)]));
    const update = await s.next();
    expect(update.type_url).toBe(TRUST_BUNDLE);
    s.write({ type_url: TRUST_BUNDLE, response_nonce: update.nonce });

    // The first cluster is then sent like any update of the subscription.
    fx.cache.set(id, Snapshot.of([bundle(2), cluster("backend")]));
    const added = await s.next();
    expect(added.type_url).toBe(CLUSTER);
    expect(added.resources.map((r) => r.name)).toEqual(["backend"]);
    expect(added.removed_resources).toEqual([]);
    s.close();
  });

  it("delta: is answered for a node the cache has no snapshot for", async () => {
    const id = "delta-no-snapshot";
    const s = openStream<DeltaResponse>("delta");
    s.write({ node: nodeToWire({ id }), type_url: CLUSTER, resource_names_subscribe: ["*"] });
    expect(await s.next()).toMatchObject({
      type_url: CLUSTER,
      system_version_info: NOTHING_VERSION,
      resources: [],
      removed_resources: [],
    });
    s.close();
  });

  it("delta: is answered on a new stream whose client already holds everything", async () => {
    const id = "delta-up-to-date";
    const backend = cluster("backend");
    fx.cache.set(id, Snapshot.of([backend]));
    const s = openStream<DeltaResponse>("delta");
    s.write({
      node: nodeToWire({ id }),
      type_url: CLUSTER,
      resource_names_subscribe: ["*"],
      initial_resource_versions: { backend: backend.version },
    });
    const answer = await s.next();
    expect(answer).toMatchObject({ type_url: CLUSTER, resources: [], removed_resources: [] });
    expect(answer.nonce).not.toBe("");
    s.close();
  });

  it("delta: a named subscription whose resources the client already holds is not answered", async () => {
    const id = "delta-named-up-to-date";
    const backend = cluster("backend");
    fx.cache.set(id, Snapshot.of([backend, bundle(1)]));
    const s = openStream<DeltaResponse>("delta");
    s.write({
      node: nodeToWire({ id }),
      type_url: CLUSTER,
      resource_names_subscribe: ["backend"],
      initial_resource_versions: { backend: backend.version },
    });
    s.write({ type_url: TRUST_BUNDLE, resource_names_subscribe: ["*"] });
    // Requests are handled in order: the first response is the bundle's.
    expect((await s.next()).type_url).toBe(TRUST_BUNDLE);
    s.close();
  });

  it("state of the world: is answered with an empty response, once", async () => {
    const id = "sotw-no-clusters";
    fx.cache.set(id, Snapshot.of([bundle(1)]));
    const s = openStream<SotwResponse>("sotw");
    s.write({ node: nodeToWire({ id }), type_url: CLUSTER });
    s.write({ type_url: TRUST_BUNDLE });
    const clusters = await s.next();
    expect(clusters).toMatchObject({ type_url: CLUSTER, version_info: NOTHING_VERSION, resources: [] });
    expect(clusters.nonce).not.toBe("");
    const bundles = await s.next();
    expect(bundles.type_url).toBe(TRUST_BUNDLE);
    s.write({ type_url: CLUSTER, version_info: NOTHING_VERSION, response_nonce: clusters.nonce });
    s.write({ type_url: TRUST_BUNDLE, version_info: bundles.version_info, response_nonce: bundles.nonce });

    fx.cache.set(id, Snapshot.of([bundle(2)]));
    expect((await s.next()).type_url).toBe(TRUST_BUNDLE);
    s.close();

    const fresh = openStream<SotwResponse>("sotw");
    fresh.write({ node: nodeToWire({ id: "sotw-no-snapshot" }), type_url: LISTENER });
    expect(await fresh.next()).toMatchObject({
      type_url: LISTENER,
      version_info: NOTHING_VERSION,
      resources: [],
    });
    fresh.close();
  });
});
