import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { AdsServer, type AckEvent, type StreamEvent, type StreamStatus } from "../../xds/server.ts";
import { Snapshot } from "../../xds/snapshot.ts";
import { TRUST_BUNDLE } from "../../xds/type-urls.ts";
import { nodeToWire, type DeltaResponse, type SotwResponse } from "../../xds/wire.ts";
import {
  nextEvent,
  openBareStream,
  startAdsFixture,
  type AdsFixture,
  type BareAdsStream,
} from "./xds-harness.ts";

/**
 * A client that does not read its stream holds the server's writes back through HTTP/2 flow
 * control. The server then holds at most one response per type for it, sends only the latest
 * state once it reads again, reads none of its requests meanwhile, and ends the stream once it
 * has taken nothing for the send timeout. Other clients are not affected.
 */

const ROOT_BYTES = 256 * 1024;
/**
 * Changes pushed to a client that does not read: several times what its buffers and the HTTP/2
 * window take (about 17 responses of this size), so most of them meet a transport that is full.
 */
const CHANGES = 60;
/** Changes that a client's and the transport's buffers may take before writes are held back. */
const MAX_CHANGES_TO_FILL = 200;

let fx: AdsFixture;
beforeAll(async () => {
  fx = await startAdsFixture();
});
afterAll(async () => {
  await fx?.close();
});

/** A trust bundle large enough that a few responses fill the flow-control windows. */
const bigBundle = (trustDomain: string, sequence: number) =>
  fx.registry.encode(TRUST_BUNDLE, {
    trust_domain: trustDomain,
    x509_roots_pem: [`${sequence}:`.padEnd(ROOT_BYTES, "r")],
    sequence,
  });

const streamOf = (f: AdsFixture, id: string): StreamStatus | undefined =>
  f.ads.status().find((st) => st.nodeId === id);

const bundleType = (f: AdsFixture, id: string) =>
  streamOf(f, id)?.types.find((t) => t.typeUrl === TRUST_BUNDLE);

/** Resolves once the push queue has handled everything queued before it (it drains on setImmediate). */
const pushesHandled = () => new Promise<void>((resolve) => setImmediate(resolve));

/**
 * Publishes changes 1..CHANGES to a node whose client is not reading, each handled by the push
 * queue before the next. Returns the most responses grpc-js held for the stream at any point, and
 * the most bytes the server counted in its transport.
 */
async function changeWhileNotRead(
  f: AdsFixture,
  id: string,
  served: { readonly writableLength: number },
  snapshot: (n: number) => Snapshot,
): Promise<{ responses: number; bytes: number }> {
  const most = { responses: 0, bytes: 0 };
  for (let n = 1; n <= CHANGES; n++) {
    f.cache.set(id, snapshot(n));
    await pushesHandled();
    most.responses = Math.max(most.responses, served.writableLength);
    most.bytes = Math.max(most.bytes, streamOf(f, id)?.bytesInFlight ?? Infinity);
  }
  return most;
}

/**
 * Publishes one change after another to a node whose client is not reading, until a response of
 * its trust bundles has to wait for the previous one; returns how many changes that took.
 */
async function changeUntilDeferred(f: AdsFixture, id: string, snapshot: (n: number) => Snapshot) {
  for (let n = 1; n <= MAX_CHANGES_TO_FILL; n++) {
    f.cache.set(id, snapshot(n));
    await pushesHandled();
    if (bundleType(f, id)?.deferred === true) return n;
  }
  throw new Error(`no response was deferred after ${MAX_CHANGES_TO_FILL} changes to a client not reading`);
}

/** Resolves once `done()` holds (checked every few milliseconds); rejects after `timeoutMs`. */
async function until(done: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!done()) {
    if (performance.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** The server side of the call opened last on `f` (the one a test just opened and was answered on). */
const lastCall = (f: AdsFixture) => {
  const call = f.calls.at(-1);
  if (!call) throw new Error("no ADS call was opened");
  return call;
};

describe("a state-of-the-world client that stops reading", () => {
  it("costs the server one response, is sent only the latest state when it reads again, and converges", async () => {
    const id = "sotw-slow-reader";
    const snapshot = (n: number) => Snapshot.of([bigBundle("slow.test", n)]);
    fx.cache.set(id, snapshot(0));
    const s = openBareStream<SotwResponse>(fx, "sotw");
    try {
      s.write({ node: nodeToWire({ id }), type_url: TRUST_BUNDLE, resource_names: [] });
      const first = await s.next();
      const served = lastCall(fx);
      s.write({ type_url: TRUST_BUNDLE, version_info: first.version_info, response_nonce: first.nonce });
      await nextEvent<AckEvent>(fx.ads, "ack", (e) => e.nodeId === id && e.nonce === first.nonce);

      s.pause();
      const most = await changeWhileNotRead(fx, id, served, snapshot);
      // One response in the transport; every later change waits for it, as one response.
      expect(most.responses).toBeLessThanOrEqual(1);
      expect(most.bytes).toBeLessThanOrEqual(ROOT_BYTES + 1024);
      expect(streamOf(fx, id)).toMatchObject({ responsesInFlight: 1, readsHeld: true });
      expect(bundleType(fx, id)?.deferred).toBe(true);

      // Requests are not read meanwhile: each of these is answered as stale once it is.
      let stale = 0;
      const countStale = (e: AckEvent) => {
        if (e.nodeId === id) stale++;
      };
      fx.ads.on("stale", countStale);
      const lastStale = nextEvent<AckEvent>(
        fx.ads,
        "stale",
        (e) => e.nodeId === id && e.nonce === "not-sent-9",
      );
      for (let i = 0; i < 10; i++) s.write({ type_url: TRUST_BUNDLE, response_nonce: `not-sent-${i}` });
      await pushesHandled();
      expect(stale).toBe(0);

      s.resume();
      const latestVersion = snapshot(CHANGES).set(TRUST_BUNDLE).version;
      const received: SotwResponse[] = [];
      while (received.at(-1)?.version_info !== latestVersion) received.push(await s.next());
      // What the client's buffers took before the transport filled, then the latest state.
      expect(received.length).toBeLessThan(CHANGES / 2);
      const last = received.at(-1)!;
      expect(fx.registry.decode(TRUST_BUNDLE, last.resources[0]!.value).message.sequence).toBe(
        String(CHANGES),
      );

      await lastStale;
      expect(stale).toBe(10);
      fx.ads.off("stale", countStale);
      const acked = nextEvent<AckEvent>(fx.ads, "ack", (e) => e.nodeId === id && e.nonce === last.nonce);
      s.write({ type_url: TRUST_BUNDLE, version_info: last.version_info, response_nonce: last.nonce });
      await acked;
      expect(streamOf(fx, id)).toMatchObject({ responsesInFlight: 0, bytesInFlight: 0, readsHeld: false });
      expect(bundleType(fx, id)).toMatchObject({ state: "acked", deferred: false, version: latestVersion });
    } finally {
      s.close();
    }
  });
});

describe("a delta client that stops reading", () => {
  it("is sent, when it reads again, the difference between what it was sent and the latest state", async () => {
    const id = "delta-slow-reader";
    const rotating = ["a.test", "b.test", "c.test"];
    // Late in the run, when responses are deferred, one bundle goes and another comes.
    const swapAt = CHANGES - 10;
    // Change n updates rotating[n % 3]; each bundle keeps the sequence of the last change to it.
    const snapshot = (n: number) =>
      Snapshot.of([
        ...rotating.map((d, i) => bigBundle(d, Math.max(0, n - ((((n - i) % 3) + 3) % 3)))),
        n < swapAt ? bigBundle("gone.test", 0) : bigBundle("new.test", swapAt),
      ]);
    fx.cache.set(id, snapshot(0));
    const s = openBareStream<DeltaResponse>(fx, "delta");
    const held = new Map<string, string>();
    const apply = (r: DeltaResponse) => {
      for (const res of r.resources) held.set(res.name, res.version);
      for (const name of r.removed_resources) held.delete(name);
    };
    try {
      s.write({ node: nodeToWire({ id }), type_url: TRUST_BUNDLE, resource_names_subscribe: ["*"] });
      const first = await s.next();
      const served = lastCall(fx);
      apply(first);
      s.write({ type_url: TRUST_BUNDLE, response_nonce: first.nonce });
      await nextEvent<AckEvent>(fx.ads, "ack", (e) => e.nodeId === id && e.nonce === first.nonce);

      s.pause();
      // A response sent when the transport drained carries everything changed since: at most the four bundles.
      const most = await changeWhileNotRead(fx, id, served, snapshot);
      expect(most.responses).toBeLessThanOrEqual(1);
      expect(most.bytes).toBeLessThanOrEqual(4 * (ROOT_BYTES + 1024));
      expect(bundleType(fx, id)?.deferred).toBe(true);

      s.resume();
      const want = new Map(
        [...snapshot(CHANGES).set(TRUST_BUNDLE).items.values()].map((r) => [r.name, r.version]),
      );
      const received: DeltaResponse[] = [];
      const sameAsWanted = () => held.size === want.size && [...want].every(([n, v]) => held.get(n) === v);
      while (!sameAsWanted()) {
        const r = await s.next();
        received.push(r);
        apply(r);
      }
      expect(received.length).toBeLessThan(CHANGES / 2);
      expect([...held.keys()].sort()).toEqual(["a.test", "b.test", "c.test", "new.test"]);

      const last = received.at(-1)!;
      const acked = nextEvent<AckEvent>(fx.ads, "ack", (e) => e.nodeId === id && e.nonce === last.nonce);
      s.write({ type_url: TRUST_BUNDLE, response_nonce: last.nonce });
      await acked;
      expect(streamOf(fx, id)).toMatchObject({ responsesInFlight: 0, readsHeld: false });
      expect(bundleType(fx, id)).toMatchObject({ state: "acked", deferred: false, resources: 4 });
      // Nothing more is owed: the next response is the next change, against what the client holds.
      fx.cache.set(id, snapshot(CHANGES + 1));
      const next = await s.next();
      expect(next.resources.map((r) => r.name)).toEqual([rotating[(CHANGES + 1) % 3]]);
      expect(next.removed_resources).toEqual([]);
    } finally {
      s.close();
    }
  });
});

describe("a client that takes nothing for the send timeout", () => {
  const SEND_TIMEOUT_MS = 400;
  let slow: AdsFixture;
  beforeAll(async () => {
    slow = await startAdsFixture(undefined, {
      sendTimeoutMs: SEND_TIMEOUT_MS,
      log: { warn: () => undefined },
    });
  });
  afterAll(async () => {
    await slow?.close();
  });

  it.each(["sotw", "delta"] as const)(
    "%s: has its stream ended, naming the node; a reading client is not affected",
    async (protocol) => {
      const id = `${protocol}-stuck`;
      const snapshot = (n: number) => Snapshot.of([bigBundle("stuck.test", n)]);
      slow.cache.set(id, snapshot(0));
      slow.cache.set(`${protocol}-reading`, snapshot(0));
      const reader = slow.client(`${protocol}-reading`, protocol);
      reader.subscribe(TRUST_BUNDLE);
      reader.start();
      const stuck: BareAdsStream<SotwResponse | DeltaResponse> = openBareStream(slow, protocol, {
        statusTimeoutMs: 20_000,
      });
      try {
        stuck.write(
          protocol === "sotw"
            ? { node: nodeToWire({ id }), type_url: TRUST_BUNDLE, resource_names: [] }
            : { node: nodeToWire({ id }), type_url: TRUST_BUNDLE, resource_names_subscribe: ["*"] },
        );
        await stuck.next();
        stuck.pause();
        const ended = nextEvent<StreamEvent>(
          slow.ads,
          "send-timeout",
          (e) => e.nodeId === id,
          10 * SEND_TIMEOUT_MS,
        );
        let timedOut = false;
        void ended.then(() => (timedOut = true)).catch(() => undefined);
        // Changes go on while the client's buffers still take what is sent; once they are full a
        // response stays deferred, and only the send timeout ends the wait.
        let changes = 0;
        while (!timedOut) {
          changes = (await changeUntilDeferred(slow, id, (n) => snapshot(changes + n))) + changes;
          await until(() => timedOut || bundleType(slow, id)?.deferred !== true, 10 * SEND_TIMEOUT_MS);
        }
        // The reading client goes on taking every change while the other stream is held back.
        slow.cache.set(`${protocol}-reading`, snapshot(changes));
        await vi.waitFor(() =>
          expect(reader.resources(TRUST_BUNDLE).get("stuck.test")?.message.sequence).toBe(String(changes)),
        );

        expect(await ended).toEqual({ nodeId: id, key: id, protocol });
        expect(streamOf(slow, id)).toBeUndefined();
        expect(streamOf(slow, `${protocol}-reading`)).toBeDefined();
        // What was already in the transport reaches the client when it reads, then the status.
        stuck.resume();
        const status = await stuck.status;
        expect(status.code).toBe(grpc.status.DEADLINE_EXCEEDED);
        expect(status.details).toContain(
          `node ${id} took none of the responses sent on its stream for ${SEND_TIMEOUT_MS} ms`,
        );
      } finally {
        stuck.close();
        reader.close();
      }
    },
  );
});

describe("the send timeout", () => {
  it.each([0, -1, Number.NaN, Number.POSITIVE_INFINITY])("is refused when it is %s ms", (sendTimeoutMs) => {
    expect(() => new AdsServer({ cache: fx.cache, registry: fx.registry, sendTimeoutMs })).toThrow(
      `sendTimeoutMs must be a number of milliseconds of at least 4, got ${sendTimeoutMs}`,
    );
  });
});
