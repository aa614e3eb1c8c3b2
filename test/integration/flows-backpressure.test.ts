import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import pino from "pino";
import { afterEach, describe, expect, it } from "vitest";
import type { FlowRecord } from "../../core/flow.ts";
import { FlowServiceClient, FlowServiceDefinition, toWireFlow } from "../../core/flow-wire.ts";
import type { WireAck, WireBatch } from "../../core/flow-wire.ts";
import { flowServiceHandlers } from "../../controlplane/flows/service.ts";
import { FlowStore } from "../../controlplane/flows/store.ts";
import { demo, flow } from "../support/flows-fixtures.ts";

const silent = pino({ level: "silent" });
const cleanups: (() => Promise<void> | void)[] = [];

afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()?.();
});

/** Resolves once `cond()` holds, checking on every turn of the event loop; bounded. */
async function waitFor(what: string, cond: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setImmediate(r));
  }
}

/**
 * The real store behind a gate the test holds: appends of records from `gatedSession` wait until
 * `open()`; every other append goes straight through. Counts what it is asked to store.
 */
class GatedStore {
  readonly appended: FlowRecord[] = [];
  appendsStarted = 0;
  private release: (() => void) | undefined;
  private readonly opened: Promise<void>;

  constructor(
    private readonly store: FlowStore,
    private readonly gated: ReadonlySet<string>,
  ) {
    this.opened = new Promise((resolve) => (this.release = resolve));
  }

  readonly append = async (records: readonly FlowRecord[]) => {
    if (records.some((r) => this.gated.has(r.id))) {
      this.appendsStarted++;
      await this.opened;
    }
    this.appended.push(...records);
    return this.store.append(records);
  };

  open(): void {
    this.release?.();
  }
}

interface Probe {
  received: number;
  maxReceivedWhileGated: number;
  paused: boolean;
}

describe("flow ingestion backpressure on a real gRPC stream", () => {
  it("stops reading a stream past 4 waiting batches, serves other streams meanwhile, then resumes with nothing lost or duplicated", async () => {
    const dir = await mkdtemp(join(tmpdir(), "sg-flowbp-"));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const store = await FlowStore.open({ dir, logger: silent });
    cleanups.push(() => store.close());

    const batches: FlowRecord[][] = Array.from({ length: 10 }, () =>
      Array.from({ length: 3 }, () => flow({ from: demo.web, to: demo.api, port: 8080 })),
    );
    const gatedIds = new Set(batches.flat().map((r) => r.id));
    const gated = new GatedStore(store, gatedIds);
    let gateOpen = false;

    // The service as the control plane registers it; each call is also watched from outside.
    const handlers = flowServiceHandlers({ store: gated, logger: silent });
    const streamFlows = handlers.StreamFlows as (call: grpc.ServerDuplexStream<WireBatch, WireAck>) => void;
    const probes = new Map<string, Probe>();
    const server = new grpc.Server();
    server.addService(FlowServiceDefinition, {
      StreamFlows: (call: grpc.ServerDuplexStream<WireBatch, WireAck>) => {
        streamFlows(call);
        let probe: Probe | undefined;
        call.on("data", (batch: WireBatch) => {
          probe ??= { received: 0, maxReceivedWhileGated: 0, paused: false };
          probes.set(batch.session, probe);
          probe.received++;
          if (!gateOpen) probe.maxReceivedWhileGated = Math.max(probe.maxReceivedWhileGated, probe.received);
          probe.paused = call.isPaused();
        });
      },
    });
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, p) =>
        err ? reject(err) : resolve(p),
      ),
    );
    cleanups.push(() => void server.forceShutdown());

    const client = new FlowServiceClient(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
    cleanups.push(() => client.close());
    const open = () =>
      (client as unknown as { StreamFlows(): grpc.ClientDuplexStream<WireBatch, WireAck> }).StreamFlows();

    const slow = open();
    const acks: WireAck[] = [];
    slow.on("data", (ack: WireAck) => acks.push(ack));
    slow.on("error", () => undefined);
    cleanups.push(() => slow.cancel());
    let written = 0;
    batches.forEach((records, i) =>
      slow.write(
        { session: "slow", sequence: i + 1, droppedTotal: 0, flows: records.map(toWireFlow) },
        () => written++,
      ),
    );
    await waitFor("the client to hand every batch to the connection", () => written === batches.length);
    await waitFor(
      "the stream to pause with 4 batches waiting",
      () => probes.get("slow")?.received === 4 && gated.appendsStarted === 1,
    );
    expect(probes.get("slow")?.paused).toBe(true);

    // A second stream on the same connection is read and acknowledged while the first waits: its
    // data went over the same TCP connection after all ten batches, so they have reached the server.
    const other = open();
    other.on("error", () => undefined);
    cleanups.push(() => other.cancel());
    const otherRecord = flow({ from: demo.api, to: demo.db, port: 5432 });
    const otherAck = new Promise<WireAck>((resolve) => other.once("data", resolve));
    other.write({ session: "other", sequence: 1, droppedTotal: 0, flows: [toWireFlow(otherRecord)] });
    expect(Number((await otherAck).sequence)).toBe(1);
    expect(probes.get("slow")).toMatchObject({ received: 4, paused: true });
    expect(gated.appendsStarted).toBe(1);
    expect(acks).toEqual([]);

    gateOpen = true;
    gated.open();
    await waitFor("every batch to be acknowledged", () => acks.length === batches.length);
    expect(acks.map((a) => Number(a.sequence))).toEqual(batches.map((_, i) => i + 1));
    expect(acks.every((a) => a.accepted === 3 && a.duplicates === 0 && a.rejected === 0)).toBe(true);
    expect(probes.get("slow")?.received).toBe(batches.length);
    expect(probes.get("slow")?.maxReceivedWhileGated).toBe(4);

    const sentIds = batches.flat().map((r) => r.id);
    const appendedIds = gated.appended.map((r) => r.id).filter((id) => gatedIds.has(id));
    expect(appendedIds).toEqual(sentIds);
    expect(
      store
        .all()
        .map((r) => r.id)
        .sort(),
    ).toEqual([...sentIds, otherRecord.id].sort());
  });
});
