import * as grpc from "@grpc/grpc-js";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { startGrpcServer } from "../../controlplane/grpc-server.ts";
import { AdsServer, type AckEvent } from "../../xds/server.ts";
import { Snapshot } from "../../xds/snapshot.ts";
import { MAX_RESOURCE_NAME_LENGTH, MAX_SUBSCRIBED_NAMES } from "../../xds/subscription-bounds.ts";
import { CLUSTER, CLUSTER_LOAD_ASSIGNMENT, LISTENER, TRUST_BUNDLE } from "../../xds/type-urls.ts";
import { NOTHING_VERSION } from "../../xds/unserved.ts";
import { nodeToWire, type DeltaResponse, type SotwResponse } from "../../xds/wire.ts";
import { nextEvent, openBareStream, startAdsFixture, type AdsFixture } from "./xds-harness.ts";

/**
 * What a subscription is owed and what it may cost: a wildcard subscription is answered even when
 * the node has nothing of its type (Envoy's initialization waits for that answer), the names a
 * stream subscribes to are bounded, and a stream not authorized yet is not read from.
 */

const SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

let fx: AdsFixture;
beforeAll(async () => {
  fx = await startAdsFixture();
});
afterAll(async () => {
  await fx?.close();
});
afterEach(() => {
  vi.restoreAllMocks();
});

const bundle = (sequence: number) =>
  fx.registry.encode(TRUST_BUNDLE, {
    trust_domain: "s.test",
    x509_roots_pem: [`root-${sequence}`],
    sequence,
  });

const cluster = (name: string) =>
  fx.registry.encode(CLUSTER, { name, type: "EDS", eds_cluster_config: { eds_config: { ads: {} } } });

const openStream = <R extends SotwResponse | DeltaResponse>(protocol: "sotw" | "delta", port?: number) =>
  openBareStream<R>(fx, protocol, { port });

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

/** `n` distinct resource names starting at `from`. */
const names = (from: number, n: number) => Array.from({ length: n }, (_, i) => `n${from + i}`);

const tooMany = (id: string, typeUrl: string) =>
  `node ${id} subscribed to more than ${MAX_SUBSCRIBED_NAMES} resources of ${typeUrl} on one stream`;

const tooLong = (id: string, typeUrl: string, length: number) =>
  `node ${id} subscribed to a resource of ${typeUrl} named with ${length} characters, more than ${MAX_RESOURCE_NAME_LENGTH}`;

describe("names a delta stream subscribes to", () => {
  it.each([
    ["a served type", CLUSTER_LOAD_ASSIGNMENT],
    ["an unserved type", SECRET],
  ])(`of %s: ${MAX_SUBSCRIBED_NAMES} are taken, one more ends the stream`, async (_, typeUrl) => {
    vi.spyOn(process, "emitWarning").mockImplementation(() => undefined);
    const id = `delta-many-names-${typeUrl === SECRET ? "unserved" : "served"}`;
    const half = MAX_SUBSCRIBED_NAMES / 2;
    const s = openStream<DeltaResponse>("delta");
    s.write({ node: nodeToWire({ id }), type_url: typeUrl, resource_names_subscribe: names(0, half) });
    const first = await s.next();
    expect(first.removed_resources).toHaveLength(half);
    // Names already subscribed do not count twice.
    s.write({
      type_url: typeUrl,
      response_nonce: first.nonce,
      resource_names_subscribe: [...names(0, 10), ...names(half, half)],
    });
    const second = await s.next();
    expect(second.type_url).toBe(typeUrl);
    expect(second.removed_resources.length).toBeGreaterThanOrEqual(half);
    // Unsubscribing makes room.
    s.write({
      type_url: typeUrl,
      response_nonce: second.nonce,
      resource_names_unsubscribe: ["n0"],
      resource_names_subscribe: ["replacement"],
    });
    const third = await s.next();
    expect(third.removed_resources).toEqual(["replacement"]);
    const held = typeStatus(id, typeUrl)?.subscription;
    expect(held === "*" ? -1 : held?.length).toBe(MAX_SUBSCRIBED_NAMES);

    s.write({ type_url: typeUrl, response_nonce: third.nonce, resource_names_subscribe: ["one-too-many"] });
    const status = await s.status;
    expect(status.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(status.details).toBe(tooMany(id, typeUrl));
    s.close();
  });

  it(`ends the stream for a name longer than ${MAX_RESOURCE_NAME_LENGTH} characters`, async () => {
    const id = "delta-long-name";
    const s = openStream<DeltaResponse>("delta");
    const longest = "x".repeat(MAX_RESOURCE_NAME_LENGTH);
    s.write({ node: nodeToWire({ id }), type_url: CLUSTER, resource_names_subscribe: [longest] });
    const answer = await s.next();
    expect(answer.removed_resources).toEqual([longest]);
    s.write({
      type_url: CLUSTER,
      response_nonce: answer.nonce,
      resource_names_subscribe: [`${longest}y`],
    });
    const status = await s.status;
    expect(status.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(status.details).toBe(tooLong(id, CLUSTER, MAX_RESOURCE_NAME_LENGTH + 1));
    s.close();
  });
});

describe("names a state-of-the-world request subscribes to", () => {
  it.each([
    ["a served type", CLUSTER_LOAD_ASSIGNMENT],
    ["an unserved type", SECRET],
  ])(`of %s: ${MAX_SUBSCRIBED_NAMES} are taken, one more ends the stream`, async (_, typeUrl) => {
    vi.spyOn(process, "emitWarning").mockImplementation(() => undefined);
    const id = `sotw-many-names-${typeUrl === SECRET ? "unserved" : "served"}`;
    const s = openStream<SotwResponse>("sotw");
    s.write({ node: nodeToWire({ id }), type_url: typeUrl, resource_names: names(0, MAX_SUBSCRIBED_NAMES) });
    const first = await s.next();
    expect(first).toMatchObject({ type_url: typeUrl, version_info: NOTHING_VERSION, resources: [] });
    const held = typeStatus(id, typeUrl)?.subscription;
    expect(held === "*" ? -1 : held?.length).toBe(MAX_SUBSCRIBED_NAMES);

    s.write({
      type_url: typeUrl,
      version_info: first.version_info,
      response_nonce: first.nonce,
      resource_names: names(0, MAX_SUBSCRIBED_NAMES + 1),
    });
    const status = await s.status;
    expect(status.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(status.details).toBe(tooMany(id, typeUrl));
    s.close();
  });

  it("counts a name repeated in one request once", async () => {
    const id = "sotw-repeated-names";
    const s = openStream<SotwResponse>("sotw");
    s.write({
      node: nodeToWire({ id }),
      type_url: CLUSTER_LOAD_ASSIGNMENT,
      resource_names: [...names(0, MAX_SUBSCRIBED_NAMES), "n0", "n1"],
    });
    expect((await s.next()).type_url).toBe(CLUSTER_LOAD_ASSIGNMENT);
    s.close();
  });

  it(`ends the stream for a name longer than ${MAX_RESOURCE_NAME_LENGTH} characters`, async () => {
    const id = "sotw-long-name";
    const s = openStream<SotwResponse>("sotw");
    const longest = "x".repeat(MAX_RESOURCE_NAME_LENGTH);
    s.write({ node: nodeToWire({ id }), type_url: CLUSTER_LOAD_ASSIGNMENT, resource_names: [longest] });
    const answer = await s.next();
    expect(answer.type_url).toBe(CLUSTER_LOAD_ASSIGNMENT);
    s.write({
      type_url: CLUSTER_LOAD_ASSIGNMENT,
      version_info: answer.version_info,
      response_nonce: answer.nonce,
      resource_names: [longest, `${longest}y`],
    });
    const status = await s.status;
    expect(status.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(status.details).toBe(tooLong(id, CLUSTER_LOAD_ASSIGNMENT, MAX_RESOURCE_NAME_LENGTH + 1));
    s.close();
  });
});

describe("a stream whose node is being authorized", () => {
  it("is not read from until it is authorized, then has what waited handled in order", async () => {
    const id = "delta-held-back";
    fx.cache.set(id, Snapshot.of([bundle(1), cluster("backend")]));
    let entered!: () => void;
    const authorizing = new Promise<void>((resolve) => (entered = resolve));
    let release!: (key: string) => void;
    const ads = new AdsServer({
      cache: fx.cache,
      registry: fx.registry,
      authorize: () => {
        entered();
        return new Promise<string>((resolve) => (release = resolve));
      },
    });
    let served: grpc.ServerDuplexStream<unknown, unknown> | undefined;
    const serve = ads.implementation.DeltaAggregatedResources as grpc.handleBidiStreamingCall<
      unknown,
      unknown
    >;
    const server = await startGrpcServer({
      host: "127.0.0.1",
      port: 0,
      tls: { keyPem: fx.cert.keyPem, certPem: fx.cert.certPem },
    });
    let s: ReturnType<typeof openStream<DeltaResponse>> | undefined;
    try {
      server.addService(ads.definition, {
        ...ads.implementation,
        DeltaAggregatedResources: (call: grpc.ServerDuplexStream<unknown, unknown>) => {
          served = call;
          serve(call);
        },
      });
      s = openStream<DeltaResponse>("delta", server.port);
      s.write({ node: nodeToWire({ id }), type_url: CLUSTER, resource_names_subscribe: ["*"] });
      await authorizing;
      s.write({ type_url: TRUST_BUNDLE, resource_names_subscribe: ["*"] });
      s.write({ type_url: LISTENER, resource_names_subscribe: ["*"] });
      // Reading has stopped: what the peer sends meanwhile fills a small buffer, then waits at
      // the peer, held back by flow control.
      expect(served?.isPaused()).toBe(true);

      release(id);
      const clusters = await s.next();
      expect(clusters.type_url).toBe(CLUSTER);
      expect(clusters.resources.map((r) => r.name)).toEqual(["backend"]);
      expect((await s.next()).type_url).toBe(TRUST_BUNDLE);
      expect(await s.next()).toMatchObject({ type_url: LISTENER, resources: [] });
      expect(served?.isPaused()).toBe(false);
    } finally {
      s?.close();
      await server.close(0);
    }
  });
});
