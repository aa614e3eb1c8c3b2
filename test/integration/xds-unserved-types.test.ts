import * as grpc from "@grpc/grpc-js";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { nodeToWire, type DeltaResponse, type SotwResponse } from "../../xds/wire.ts";
import { Snapshot } from "../../xds/snapshot.ts";
import type { UnservedEvent } from "../../xds/server.ts";
import { MAX_TYPE_URL_LENGTH, MAX_UNSERVED_TYPES, NOTHING_VERSION } from "../../xds/unserved.ts";
import { TRUST_BUNDLE } from "../../xds/type-urls.ts";
import { openBareStream, startAdsFixture, type AdsFixture } from "./xds-harness.ts";

/**
 * On ADS every type shares one stream: a type the server does not serve is answered as having no
 * resources, and the types it does serve keep flowing on the same stream.
 */

const SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
const SCOPED_ROUTES = "type.googleapis.com/envoy.config.route.v3.ScopedRouteConfiguration";

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
    trust_domain: "u.test",
    x509_roots_pem: [`root-${sequence}`],
    sequence,
  });

const openStream = <R extends SotwResponse | DeltaResponse>(protocol: "sotw" | "delta") =>
  openBareStream<R>(fx, protocol, { statusTimeoutMs: 5_000 });

const sequenceOf = (value: Uint8Array) => fx.registry.decode(TRUST_BUNDLE, value).message.sequence;

describe("state of the world", () => {
  it("answers unserved types with one empty response and keeps serving the others on the stream", async () => {
    const id = "sotw-unserved";
    fx.cache.set(id, Snapshot.of([bundle(1)]));
    const s = openStream<SotwResponse>("sotw");
    // The unserved types come first: a response the snapshot change caused for them would then
    // arrive before the served type's update, never after it.
    s.write({ node: nodeToWire({ id }), type_url: SECRET, resource_names: ["server-cert"] });
    s.write({ type_url: SCOPED_ROUTES });
    s.write({ type_url: TRUST_BUNDLE });

    const secret = await s.next();
    expect(secret).toMatchObject({ type_url: SECRET, version_info: NOTHING_VERSION, resources: [] });
    expect(secret.nonce).not.toBe("");
    const scoped = await s.next();
    expect(scoped).toMatchObject({ type_url: SCOPED_ROUTES, version_info: NOTHING_VERSION, resources: [] });
    const served = await s.next();
    expect(served.type_url).toBe(TRUST_BUNDLE);
    expect(served.resources.map((r) => sequenceOf(r.value))).toEqual(["1"]);

    // ACK everything, as Envoy would.
    s.write({
      type_url: SECRET,
      resource_names: ["server-cert"],
      version_info: NOTHING_VERSION,
      response_nonce: secret.nonce,
    });
    s.write({ type_url: SCOPED_ROUTES, version_info: NOTHING_VERSION, response_nonce: scoped.nonce });
    s.write({ type_url: TRUST_BUNDLE, version_info: served.version_info, response_nonce: served.nonce });

    fx.cache.set(id, Snapshot.of([bundle(2)]));
    const update = await s.next();
    expect(update.type_url).toBe(TRUST_BUNDLE);
    expect(update.resources.map((r) => sequenceOf(r.value))).toEqual(["2"]);

    // A new name for the unserved type is answered again, still with nothing.
    s.write({
      type_url: SECRET,
      resource_names: ["server-cert", "ca"],
      version_info: NOTHING_VERSION,
      response_nonce: secret.nonce,
    });
    const again = await s.next();
    expect(again).toMatchObject({ type_url: SECRET, version_info: NOTHING_VERSION, resources: [] });
    expect(again.nonce).not.toBe(secret.nonce);
    s.write({
      type_url: SECRET,
      resource_names: ["server-cert", "ca"],
      version_info: NOTHING_VERSION,
      response_nonce: again.nonce,
    });
    s.write({ type_url: TRUST_BUNDLE, version_info: update.version_info, response_nonce: update.nonce });

    // Nothing else was sent for the unserved types: the next response is the next bundle.
    fx.cache.set(id, Snapshot.of([bundle(3)]));
    const third = await s.next();
    expect(third.type_url).toBe(TRUST_BUNDLE);
    expect(third.resources.map((r) => sequenceOf(r.value))).toEqual(["3"]);

    const types = fx.ads.status().find((st) => st.nodeId === id)?.types ?? [];
    expect(types.find((t) => t.typeUrl === SECRET)).toMatchObject({
      served: false,
      subscription: ["server-cert", "ca"],
      resources: 0,
      state: "acked",
    });
    expect(types.find((t) => t.typeUrl === SCOPED_ROUTES)).toMatchObject({
      served: false,
      subscription: "*",
      state: "acked",
    });
    expect(types.find((t) => t.typeUrl === TRUST_BUNDLE)).toMatchObject({ served: true, resources: 1 });
    s.close();
  });
});

describe("delta", () => {
  it("answers unserved names as removed, a wildcard with one empty response, and keeps serving the others", async () => {
    const id = "delta-unserved";
    fx.cache.set(id, Snapshot.of([bundle(1)]));
    const s = openStream<DeltaResponse>("delta");
    s.write({
      node: nodeToWire({ id }),
      type_url: SECRET,
      resource_names_subscribe: ["server-cert"],
      initial_resource_versions: { "old-cert": "v0" },
    });
    s.write({ type_url: SCOPED_ROUTES, resource_names_subscribe: ["*"] });
    s.write({ type_url: TRUST_BUNDLE, resource_names_subscribe: ["*"] });

    const secret = await s.next();
    expect(secret).toMatchObject({ type_url: SECRET, system_version_info: NOTHING_VERSION, resources: [] });
    expect([...secret.removed_resources].sort()).toEqual(["old-cert", "server-cert"]);
    const scoped = await s.next();
    expect(scoped).toMatchObject({ type_url: SCOPED_ROUTES, resources: [], removed_resources: [] });
    const served = await s.next();
    expect(served.type_url).toBe(TRUST_BUNDLE);
    expect(served.resources.map((r) => sequenceOf(r.resource?.value ?? new Uint8Array()))).toEqual(["1"]);

    s.write({ type_url: SECRET, response_nonce: secret.nonce });
    s.write({ type_url: SCOPED_ROUTES, response_nonce: scoped.nonce });
    s.write({ type_url: TRUST_BUNDLE, response_nonce: served.nonce });

    fx.cache.set(id, Snapshot.of([bundle(2)]));
    const update = await s.next();
    expect(update.type_url).toBe(TRUST_BUNDLE);
    expect(update.resources.map((r) => sequenceOf(r.resource?.value ?? new Uint8Array()))).toEqual(["2"]);

    // Each newly subscribed name is answered as not existing; unsubscribing is not answered.
    s.write({ type_url: SECRET, resource_names_subscribe: ["ca"], response_nonce: secret.nonce });
    const ca = await s.next();
    expect(ca).toMatchObject({ type_url: SECRET, resources: [], removed_resources: ["ca"] });
    s.write({ type_url: SECRET, resource_names_unsubscribe: ["server-cert"], response_nonce: ca.nonce });
    s.write({ type_url: TRUST_BUNDLE, response_nonce: update.nonce });

    fx.cache.set(id, Snapshot.of([bundle(3)]));
    const third = await s.next();
    expect(third.type_url).toBe(TRUST_BUNDLE);
    expect(third.resources.map((r) => sequenceOf(r.resource?.value ?? new Uint8Array()))).toEqual(["3"]);

    const types = fx.ads.status().find((st) => st.nodeId === id)?.types ?? [];
    expect(types.find((t) => t.typeUrl === SECRET)).toMatchObject({
      served: false,
      subscription: ["ca"],
      resources: 0,
      state: "acked",
    });
    expect(types.find((t) => t.typeUrl === SCOPED_ROUTES)).toMatchObject({
      served: false,
      subscription: "*",
    });
    s.close();
  });
});

describe.each(["sotw", "delta"] as const)("unserved types on %s", (protocol) => {
  const first = (id: string, typeUrl: string) =>
    protocol === "sotw"
      ? { node: nodeToWire({ id }), type_url: typeUrl }
      : { node: nodeToWire({ id }), type_url: typeUrl, resource_names_subscribe: ["*"] };
  const subscribe = (typeUrl: string) =>
    protocol === "sotw" ? { type_url: typeUrl } : { type_url: typeUrl, resource_names_subscribe: ["*"] };

  it("warns once per stream and type, naming node and type", async () => {
    const id = `${protocol}-warned`;
    fx.cache.set(id, Snapshot.of([bundle(1)]));
    const warnings: string[] = [];
    vi.spyOn(process, "emitWarning").mockImplementation((w: string | Error) => {
      warnings.push(String(w));
    });
    const events: UnservedEvent[] = [];
    const onUnserved = (e: UnservedEvent) => {
      if (e.nodeId === id) events.push(e);
    };
    fx.ads.on("unserved", onUnserved);
    try {
      for (let round = 0; round < 2; round++) {
        const s = openStream<SotwResponse | DeltaResponse>(protocol);
        s.write(first(id, SECRET));
        const secret = await s.next();
        // The same type again (an ACK, then a repeated subscription) is not warned about again.
        s.write(
          protocol === "sotw"
            ? { type_url: SECRET, version_info: NOTHING_VERSION, response_nonce: secret.nonce }
            : { type_url: SECRET, response_nonce: secret.nonce },
        );
        s.write(subscribe(SECRET));
        s.write(subscribe(SCOPED_ROUTES));
        s.write(subscribe(TRUST_BUNDLE));
        // Requests are handled in order: once the served type answers, all of the above were read.
        for (;;) if ((await s.next()).type_url === TRUST_BUNDLE) break;
        s.close();
      }
    } finally {
      fx.ads.off("unserved", onUnserved);
    }
    const mine = warnings.filter((w) => w.includes(`"nodeId":"${id}"`));
    expect(mine).toHaveLength(4);
    expect(mine.filter((w) => w.includes(`"typeUrl":"${SECRET}"`))).toHaveLength(2);
    expect(mine.filter((w) => w.includes(`"typeUrl":"${SCOPED_ROUTES}"`))).toHaveLength(2);
    expect(mine[0]).toContain("resource type not served");
    expect(events.map((e) => [e.typeUrl, e.protocol])).toEqual([
      [SECRET, protocol],
      [SCOPED_ROUTES, protocol],
      [SECRET, protocol],
      [SCOPED_ROUTES, protocol],
    ]);
  });

  it(`ends the stream past ${MAX_UNSERVED_TYPES} unserved types, having answered every one before`, async () => {
    vi.spyOn(process, "emitWarning").mockImplementation(() => undefined);
    const id = `${protocol}-capped`;
    fx.cache.set(id, Snapshot.of([bundle(1)]));
    const s = openStream<SotwResponse | DeltaResponse>(protocol);
    s.write(first(id, TRUST_BUNDLE));
    expect((await s.next()).type_url).toBe(TRUST_BUNDLE);
    const junk = (i: number) => `type.googleapis.com/acme.Junk${i}`;
    for (let i = 0; i < MAX_UNSERVED_TYPES; i++) s.write(subscribe(junk(i)));
    for (let i = 0; i < MAX_UNSERVED_TYPES; i++) expect((await s.next()).type_url).toBe(junk(i));
    // Repeating a type already counted does not count again.
    s.write(subscribe(junk(0)));
    s.write(subscribe(junk(MAX_UNSERVED_TYPES)));
    const status = await s.status;
    expect(status.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(status.details).toBe(
      `node ${id} subscribed to more than ${MAX_UNSERVED_TYPES} resource types this server does not serve (the last: ${junk(MAX_UNSERVED_TYPES)})`,
    );
    s.close();
  });

  it("ends the stream for a type URL longer than any resource type", async () => {
    const s = openStream<SotwResponse | DeltaResponse>(protocol);
    s.write(first(`${protocol}-long-type`, `type.googleapis.com/${"x".repeat(MAX_TYPE_URL_LENGTH)}`));
    const status = await s.status;
    expect(status.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(status.details).toContain(`longer than ${MAX_TYPE_URL_LENGTH}, not a resource type`);
    s.close();
  });
});
