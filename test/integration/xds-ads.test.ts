import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { adsServiceDefinition, nodeToWire, type DeltaResponse, type SotwResponse } from "../../xds/wire.ts";
import type { TypeUpdate, XdsClient } from "../../xds/client.ts";
import { ResourceValidationError } from "../../xds/validate.ts";
import { Snapshot } from "../../xds/snapshot.ts";
import type { AckEvent, NackEvent } from "../../xds/server.ts";
import { POLICY_SET, REVOCATION_LIST, TRUST_BUNDLE } from "../../xds/type-urls.ts";
import { nextEvent, startAdsFixture, type AdsFixture } from "./xds-harness.ts";

let fx: AdsFixture;
beforeAll(async () => {
  fx = await startAdsFixture();
});
afterAll(async () => {
  await fx?.close();
});

const bundle = (td: string, sequence: number) =>
  fx.registry.encode(TRUST_BUNDLE, {
    trust_domain: td,
    x509_roots_pem: [`root-of-${td}-${sequence}`],
    sequence,
  });
const revocations = (td: string, sequence: number) =>
  fx.registry.encode(REVOCATION_LIST, {
    trust_domain: td,
    spiffe_ids: [`spiffe://${td}/workload/x`],
    sequence,
  });
const policy = (workload: string, generation: number) =>
  fx.registry.encode(POLICY_SET, {
    name: workload,
    workload,
    mode: "ENFORCE",
    generation,
    ingress: [
      {
        id: "p/ingress/0",
        action: "ALLOW",
        ports: [8080],
        peers: [{ selector: { match_labels: { app: "web" } } }],
      },
    ],
  });

/** A bare ADS stream, for requests no well-behaved client would send. */
function rawStream(protocol: "sotw" | "delta") {
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
    def.responseDeserialize as (b: Buffer) => SotwResponse | DeltaResponse,
  );
  call.on("error", () => undefined);
  return {
    call,
    close: () => {
      call.cancel();
      client.close();
    },
  };
}

function updates(client: XdsClient, typeUrl: string): TypeUpdate[] {
  const seen: TypeUpdate[] = [];
  client.on("update", (u) => {
    if (u.typeUrl === typeUrl) seen.push(u);
  });
  return seen;
}

describe.each(["sotw", "delta"] as const)("ADS %s", (protocol) => {
  const node = (n: string) => `${protocol}-${n}`;
  const ackFrom = (nodeId: string, typeUrl: string) =>
    nextEvent<AckEvent>(fx.ads, "ack", (e) => e.nodeId === nodeId && e.typeUrl === typeUrl);

  it("subscribes, updates and removes, each node seeing only its own snapshot", async () => {
    const id = node("a");
    fx.cache.set(id, Snapshot.of([bundle("a.test", 1), bundle("b.test", 1)]));
    fx.cache.set(node("other"), Snapshot.of([bundle("other.test", 1)]));
    const client = fx.client(id, protocol);
    const seen = updates(client, TRUST_BUNDLE);
    client.subscribe(TRUST_BUNDLE);
    const acked = ackFrom(id, TRUST_BUNDLE);
    client.start();
    await acked;
    expect([...client.resources(TRUST_BUNDLE).keys()].sort()).toEqual(["a.test", "b.test"]);

    const updated = nextEvent<TypeUpdate>(client, "update", (u) => u.changed.includes("b.test"));
    fx.cache.set(id, Snapshot.of([bundle("a.test", 1), bundle("b.test", 2)]));
    const u1 = await updated;
    expect(u1.changed).toEqual(["b.test"]);
    expect(client.resources(TRUST_BUNDLE).get("b.test")?.message.sequence).toBe("2");

    const removed = nextEvent<TypeUpdate>(client, "update", (u) => u.removed.length > 0);
    fx.cache.set(id, Snapshot.of([bundle("b.test", 2)]));
    expect((await removed).removed).toEqual(["a.test"]);
    expect([...client.resources(TRUST_BUNDLE).keys()]).toEqual(["b.test"]);
    expect(seen.flatMap((u) => [...u.resources.keys()])).not.toContain("other.test");
  });

  it("serves named subscriptions and changes them on the fly", async () => {
    const id = node("named");
    fx.cache.set(
      id,
      Snapshot.of([policy("spiffe://t/w/1", 1), policy("spiffe://t/w/2", 1), policy("spiffe://t/w/3", 1)]),
    );
    const client = fx.client(id, protocol);
    client.subscribe(POLICY_SET, { names: ["spiffe://t/w/1"] });
    const first = nextEvent<TypeUpdate>(client, "update");
    client.start();
    expect([...(await first).resources.keys()]).toEqual(["spiffe://t/w/1"]);
    const second = nextEvent<TypeUpdate>(client, "update", (u) => u.resources.has("spiffe://t/w/2"));
    client.setNames(POLICY_SET, ["spiffe://t/w/1", "spiffe://t/w/2"]);
    expect([...(await second).resources.keys()].sort()).toEqual(["spiffe://t/w/1", "spiffe://t/w/2"]);
  });

  it("keeps the last good config after a NACK with error_detail and resends only on change", async () => {
    const id = node("nack");
    fx.cache.set(id, Snapshot.of([bundle("n.test", 1), revocations("n.test", 1)]));
    const client = fx.client(id, protocol);
    client.subscribe(TRUST_BUNDLE, {
      handler: (u) => {
        for (const r of u.resources.values()) {
          if (r.message.sequence === "2") throw new Error(`bundle ${r.name}: sequence 2 is poisoned`);
        }
      },
    });
    client.subscribe(REVOCATION_LIST);
    const bundleResponses = updates(client, TRUST_BUNDLE);
    let nacksSeen = 0;
    client.on("nack", () => nacksSeen++);
    const ready = Promise.all([ackFrom(id, TRUST_BUNDLE), ackFrom(id, REVOCATION_LIST)]);
    client.start();
    await ready;

    const nack = nextEvent<NackEvent>(fx.ads, "nack", (e) => e.nodeId === id);
    fx.cache.set(id, Snapshot.of([bundle("n.test", 2), revocations("n.test", 1)]));
    expect((await nack).errorDetail).toContain("sequence 2 is poisoned");
    expect(client.resources(TRUST_BUNDLE).get("n.test")?.message.sequence).toBe("1");

    // An unrelated change travels the same ordered stream: a resend of the NACKed bundle would arrive first.
    const revAck = ackFrom(id, REVOCATION_LIST);
    fx.cache.set(id, Snapshot.of([bundle("n.test", 2), revocations("n.test", 2)]));
    await revAck;
    expect(nacksSeen).toBe(1);
    expect(bundleResponses).toHaveLength(1);
    const status = fx.ads.status().find((st) => st.nodeId === id);
    const bundleStatus = status?.types.find((t) => t.typeUrl === TRUST_BUNDLE);
    expect(bundleStatus?.state).toBe("nacked");
    expect(bundleStatus?.error).toContain("sequence 2 is poisoned");

    const fixed = nextEvent<TypeUpdate>(client, "update", (u) => u.typeUrl === TRUST_BUNDLE);
    fx.cache.set(id, Snapshot.of([bundle("n.test", 3), revocations("n.test", 2)]));
    await fixed;
    expect(client.resources(TRUST_BUNDLE).get("n.test")?.message.sequence).toBe("3");
  });

  it("resumes after a reconnect with the last good config and picks up changes made meanwhile", async () => {
    const id = node("reconnect");
    fx.cache.set(id, Snapshot.of([bundle("r.test", 1)]));
    const client = fx.client(id, protocol);
    client.subscribe(TRUST_BUNDLE);
    const acked = ackFrom(id, TRUST_BUNDLE);
    client.start();
    await acked;

    const down = nextEvent(client, "disconnected");
    const restarting = fx.restart();
    await down;
    expect(client.resources(TRUST_BUNDLE).get("r.test")?.message.sequence).toBe("1");
    fx.cache.set(id, Snapshot.of([bundle("r.test", 2)]));
    const resumed = nextEvent<TypeUpdate>(client, "update", (u) => u.changed.includes("r.test"), 10_000);
    await restarting;
    const u = await resumed;
    expect(u.resources.get("r.test")?.message.sequence).toBe("2");
  });

  it("ignores a request with a stale nonce and honours the current one", async () => {
    const id = node("stale");
    fx.cache.set(id, Snapshot.of([bundle("s.test", 1)]));
    const raw = rawStream(protocol);
    const responses: (SotwResponse | DeltaResponse)[] = [];
    const first = new Promise<void>((resolve) =>
      raw.call.on("data", (r: SotwResponse | DeltaResponse) => {
        responses.push(r);
        resolve();
      }),
    );
    raw.call.write(
      protocol === "sotw"
        ? { node: nodeToWire({ id }), type_url: TRUST_BUNDLE }
        : { node: nodeToWire({ id }), type_url: TRUST_BUNDLE, resource_names_subscribe: ["*"] },
    );
    await first;
    const nonce = responses[0]?.nonce ?? "";
    expect(nonce).not.toBe("");

    const stale = nextEvent<AckEvent>(fx.ads, "stale", (e) => e.nodeId === id);
    let nacked = false;
    const onNack = (e: NackEvent) => {
      if (e.nodeId === id) nacked = true;
    };
    fx.ads.on("nack", onNack);
    // A NACK carrying a nonce the server never sent on this stream: must change nothing.
    raw.call.write({
      type_url: TRUST_BUNDLE,
      response_nonce: `${nonce}-old`,
      error_detail: { code: 3, message: "stale" },
    });
    expect((await stale).nonce).toBe(`${nonce}-old`);
    const acked = nextEvent<AckEvent>(fx.ads, "ack", (e) => e.nodeId === id);
    raw.call.write(
      protocol === "sotw"
        ? {
            type_url: TRUST_BUNDLE,
            version_info: (responses[0] as SotwResponse).version_info,
            response_nonce: nonce,
          }
        : { type_url: TRUST_BUNDLE, response_nonce: nonce },
    );
    expect((await acked).nonce).toBe(nonce);
    fx.ads.off("nack", onNack);
    expect(nacked).toBe(false);
    expect(responses).toHaveLength(1);
    raw.close();
  });

  it("pushes 1,000 resources in one response", async () => {
    const id = node("thousand");
    const client = fx.client(id, protocol);
    client.subscribe(POLICY_SET);
    const open = nextEvent(fx.ads, "stream-open", (e: { nodeId: string }) => e.nodeId === id);
    client.start();
    await open;
    const big = nextEvent<TypeUpdate>(client, "update", (u) => u.resources.size > 0);
    fx.cache.set(
      id,
      Snapshot.of(Array.from({ length: 1000 }, (_, i) => policy(`spiffe://t/workload/w${i}`, i))),
    );
    const u = await big;
    expect(u.resources.size).toBe(1000);
    expect(u.changed).toHaveLength(1000);
    expect(u.resources.get("spiffe://t/workload/w999")?.message.generation).toBe("999");
  });
});

describe("validation before anything is sent", () => {
  it.each([
    [
      "an unknown field",
      TRUST_BUNDLE,
      { trust_domain: "x.test", x509_root_pem: ["r"] },
      'TrustBundle "x.test": x509_root_pem: unknown field of sigil.v1.TrustBundle',
    ],
    [
      "a wrong enum",
      POLICY_SET,
      { name: "spiffe://t/w", ingress: [{ id: "p/ingress/0", action: "PERMIT" }] },
      'PolicySet "spiffe://t/w": ingress[0].action: "PERMIT" is not a value of enum Action',
    ],
    [
      "an unregistered Any type",
      "type.googleapis.com/envoy.config.listener.v3.Listener",
      { name: "l", api_listener: { api_listener: { "@type": "type.googleapis.com/acme.Unknown", x: 1 } } },
      'Listener "l": api_listener.api_listener.@type: type type.googleapis.com/acme.Unknown is not registered',
    ],
    [
      "an Any without @type",
      "type.googleapis.com/envoy.config.listener.v3.Listener",
      { name: "l", api_listener: { api_listener: { type_url: "x", value: "" } } },
      'Listener "l": api_listener.api_listener: an Any must name its type in "@type"',
    ],
    [
      "a camelCase field inside an Any",
      "type.googleapis.com/envoy.config.listener.v3.Listener",
      {
        name: "l",
        api_listener: {
          api_listener: {
            "@type":
              "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            rds: { routeConfigName: "r" },
          },
        },
      },
      'api_listener.api_listener.rds.routeConfigName: unknown field of envoy.extensions.filters.network.http_connection_manager.v3.Rds (did you mean "route_config_name"?)',
    ],
    [
      "an unregistered resource type",
      "type.googleapis.com/acme.Thing",
      { name: "t" },
      "type type.googleapis.com/acme.Thing is not registered",
    ],
    ["a missing name", TRUST_BUNDLE, { sequence: 1 }, "trust_domain: a resource needs a non-empty name"],
    [
      "a string where a number belongs",
      TRUST_BUNDLE,
      { trust_domain: "t", sequence: "1e3" },
      "sequence: expected an unsigned 64-bit integer",
    ],
    [
      "two members of a oneof",
      "type.googleapis.com/envoy.config.cluster.v3.Cluster",
      { name: "c", type: "EDS", cluster_type: { name: "x" } },
      "cluster_discovery_type: oneof has more than one member set: type, cluster_type",
    ],
  ])("refuses %s with an error naming resource and field", (_what, typeUrl, body, message) => {
    let error: unknown;
    try {
      fx.registry.encode(typeUrl, body);
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(ResourceValidationError);
    expect((error as Error).message).toContain(message);
  });
  it("never sends a refused resource: the node keeps what it had", async () => {
    const id = "invalid-node";
    fx.cache.set(id, Snapshot.of([bundle("v.test", 1)]));
    const client = fx.client(id, "sotw");
    client.subscribe(TRUST_BUNDLE);
    const seen = updates(client, TRUST_BUNDLE);
    const acked = nextEvent<AckEvent>(fx.ads, "ack", (e) => e.nodeId === id);
    client.start();
    await acked;
    expect(() =>
      fx.cache.set(
        id,
        Snapshot.of([fx.registry.encode(TRUST_BUNDLE, { trust_domain: "v.test", sequence: -1 })]),
      ),
    ).toThrow(/sequence: expected an unsigned 64-bit integer/);
    // A later valid change is the next thing the client sees.
    const next = nextEvent<TypeUpdate>(client, "update", (u) => u.changed.includes("w.test"));
    fx.cache.set(id, Snapshot.of([bundle("v.test", 1), bundle("w.test", 1)]));
    await next;
    expect(seen).toHaveLength(2);
  });
});

describe("protocol errors", () => {
  it("ends a stream whose first request carries no node, and one whose request names no type", async () => {
    const noNode = rawStream("sotw");
    const status1 = new Promise<grpc.StatusObject>((resolve) => noNode.call.on("status", resolve));
    noNode.call.write({ type_url: TRUST_BUNDLE });
    expect((await status1).details).toContain("the first request of a stream must carry the node");
    noNode.close();

    const noType = rawStream("delta");
    const status2 = new Promise<grpc.StatusObject>((resolve) => noType.call.on("status", resolve));
    noType.call.write({ node: nodeToWire({ id: "odd" }), type_url: "" });
    const s2 = await status2;
    expect(s2.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(s2.details).toBe("a request on ADS must carry a type_url");
    noType.close();
  });

  it.each(["sotw", "delta"] as const)(
    "keeps a %s stream that asks for an unserved type, and ends it when a later request names no type",
    async (protocol) => {
      const id = `${protocol}-typeless`;
      fx.cache.set(id, Snapshot.of([bundle("t.test", 1)]));
      const raw = rawStream(protocol);
      const seen: string[] = [];
      const served = new Promise<void>((resolve) =>
        raw.call.on("data", (r: SotwResponse | DeltaResponse) => {
          seen.push(r.type_url);
          if (r.type_url === TRUST_BUNDLE) resolve();
        }),
      );
      const status = new Promise<grpc.StatusObject>((resolve) => raw.call.on("status", resolve));
      const subscribe = (typeUrl: string) =>
        protocol === "sotw" ? { type_url: typeUrl } : { type_url: typeUrl, resource_names_subscribe: ["*"] };
      raw.call.write({ node: nodeToWire({ id }), ...subscribe("type.googleapis.com/acme.Secret") });
      raw.call.write(subscribe(TRUST_BUNDLE));
      await served;
      expect(seen).toEqual(["type.googleapis.com/acme.Secret", TRUST_BUNDLE]);
      raw.call.write(subscribe(""));
      const s = await status;
      expect(s.code).toBe(grpc.status.INVALID_ARGUMENT);
      expect(s.details).toBe("a request on ADS must carry a type_url");
      raw.close();
    },
  );
});
