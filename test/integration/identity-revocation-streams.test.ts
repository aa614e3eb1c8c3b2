import { X509Certificate } from "node:crypto";
import { once } from "node:events";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ControlPlane } from "../../controlplane/control-plane.ts";
import { FlowServiceClient } from "../../core/flow-wire.ts";
import type { WireAck, WireBatch } from "../../core/flow-wire.ts";
import { canonicalSerial } from "../../core/svid/revocation.ts";
import type { WorkloadCredentials } from "../../sidecar/identity/rotation.ts";
import { XdsClient } from "../../xds/client.ts";
import { REVOCATION_LIST, TRUST_BUNDLE } from "../../xds/type-urls.ts";
import { attestWithJoinToken, startTestControlPlane } from "../support/control-plane.ts";
import type { Closer, TestControlPlane } from "../support/control-plane.ts";

let controlPlane: TestControlPlane;
let cp: ControlPlane;
let caPem: string;
let target: string;
const closers: Closer[] = [];

interface Status {
  readonly code: number;
  readonly details: string;
}

beforeAll(async () => {
  controlPlane = await startTestControlPlane("sg-revs-", {});
  ({ cp, caPem, grpcTarget: target } = controlPlane);
}, 30_000);

afterAll(async () => {
  for (const c of closers.splice(0).reverse()) await c();
  await controlPlane?.close();
});

async function attest(name: string): Promise<WorkloadCredentials> {
  const { token } = await cp.identity.tokens.create({ name, labels: { app: name }, ttlSeconds: 600 });
  return (await attestWithJoinToken(controlPlane, token, closers)).current();
}

function credentials(creds: WorkloadCredentials): grpc.ChannelCredentials {
  return grpc.credentials.createSsl(
    Buffer.from(caPem),
    Buffer.from(creds.privateKeyPem),
    Buffer.from(creds.certChainPem),
  );
}

const channelOptions = {
  "grpc.ssl_target_name_override": "localhost",
  "grpc.use_local_subchannel_pool": 1,
} as const;

/** An ADS client as the workload, subscribed to the trust bundle and revocations, not started. */
function adsClient(creds: WorkloadCredentials): XdsClient {
  const client = new XdsClient({
    target,
    credentials: credentials(creds),
    channelOptions,
    node: { id: creds.spiffeId },
    protocol: "sotw",
    registry: cp.xds.registry,
    // One attempt per test step: reconnecting is driven by the test, not the backoff.
    backoff: { initialMs: 60_000, maxMs: 60_000, multiplier: 1, jitter: 0 },
  });
  closers.push(() => client.close());
  client.subscribe(TRUST_BUNDLE);
  client.subscribe(REVOCATION_LIST);
  return client;
}

/** An ADS stream as the workload, open once its first response is acknowledged. */
async function adsStream(creds: WorkloadCredentials): Promise<XdsClient> {
  const client = adsClient(creds);
  const acked = once(client, "ack", { signal: AbortSignal.timeout(5_000) });
  client.start();
  await acked;
  return client;
}

/** A FlowService stream as the workload, with its final status. */
function flowStream(creds: WorkloadCredentials): {
  stream: grpc.ClientDuplexStream<WireBatch, WireAck>;
  status: Promise<Status>;
} {
  const client = new FlowServiceClient(target, credentials(creds), channelOptions);
  closers.push(() => client.close());
  const stream = (
    client as unknown as { StreamFlows(): grpc.ClientDuplexStream<WireBatch, WireAck> }
  ).StreamFlows();
  stream.on("error", () => undefined);
  const status = new Promise<Status>((resolve) => stream.on("status", resolve));
  closers.push(() => stream.cancel());
  return { stream, status };
}

/** How a new ADS stream opened with `creds` ends (it must be refused). */
function refusedAds(creds: WorkloadCredentials): Promise<Status> {
  const client = adsClient(creds);
  const refused = disconnected(client);
  client.start();
  return refused;
}

function disconnected(client: XdsClient): Promise<Status> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("the ADS stream stayed open")), 5_000);
    client.once("disconnected", (s: Status) => {
      clearTimeout(timer);
      resolve(s);
    });
  });
}

function within<T>(what: string, promise: Promise<T>, ms = 5_000): Promise<T> {
  return Promise.race([
    promise,
    new Promise<never>((_, reject) =>
      setTimeout(() => reject(new Error(`${what}: no answer in ${ms} ms`)), ms),
    ),
  ]);
}

/** The ADS stream ended with `adsCode` and the flow stream with PERMISSION_DENIED, both naming the revocation. */
async function expectCut(
  ads: Promise<Status>,
  flows: Promise<Status>,
  adsCode: grpc.status,
  revoked: RegExp,
): Promise<void> {
  const adsEnd = await ads;
  expect(adsEnd.code).toBe(adsCode);
  expect(adsEnd.details).toMatch(revoked);
  const flowsEnd = await within("flow stream", flows);
  expect(flowsEnd.code).toBe(grpc.status.PERMISSION_DENIED);
  expect(flowsEnd.details).toMatch(revoked);
}

/** A flow stream still open: an empty batch is acknowledged. */
async function expectAcked(stream: grpc.ClientDuplexStream<WireBatch, WireAck>): Promise<void> {
  stream.write({ session: "s", sequence: 1, droppedTotal: 0, flows: [] });
  const [ack] = (await once(stream, "data", { signal: AbortSignal.timeout(5_000) })) as [WireAck];
  expect(Number(ack.sequence)).toBe(1);
}

describe("revoking a workload ends its open control-plane streams", () => {
  it("cuts its ADS and flow streams with PERMISSION_DENIED naming the revocation, and refuses reconnects", async () => {
    const web = await attest("web");
    const api = await attest("api");
    const webAds = await adsStream(web);
    const apiAds = await adsStream(api);
    const webFlows = flowStream(web);
    const apiFlows = flowStream(api);
    // The server sends headers once it has authenticated the stream.
    await once(webFlows.stream, "metadata", { signal: AbortSignal.timeout(5_000) });
    await once(apiFlows.stream, "metadata", { signal: AbortSignal.timeout(5_000) });
    expect(cp.xds.ads.status().map((s) => s.key)).toEqual(
      expect.arrayContaining([web.spiffeId, api.spiffeId]),
    );

    const adsCut = disconnected(webAds);
    const apiPush = once(apiAds, "ack", { signal: AbortSignal.timeout(5_000) });
    await cp.identity.registry.revoke(web.spiffeId, "key compromised", cp.identity.ca.maxLeafTtlSeconds);

    const revoked = /spiffe:\/\/sigil\.local\/workload\/web was revoked at \S+ \(key compromised\)/;
    await expectCut(adsCut, webFlows.status, grpc.status.PERMISSION_DENIED, revoked);

    // The other workload keeps both streams and is told of the revocation on its ADS stream.
    await apiPush;
    expect(cp.xds.ads.status().map((s) => s.key)).toEqual([api.spiffeId]);
    await expectAcked(apiFlows.stream);

    // Reconnecting with the still unexpired certificate is refused on both services.
    const adsAgain = await refusedAds(web);
    expect(adsAgain.code).toBe(grpc.status.PERMISSION_DENIED);
    expect(adsAgain.details).toMatch(revoked);
    const flowsAgain = await within("flow reconnect", flowStream(web).status);
    expect(flowsAgain.code).toBe(grpc.status.PERMISSION_DENIED);
    expect(flowsAgain.details).toMatch(revoked);
    expect(cp.xds.ads.status().map((s) => s.key)).toEqual([api.spiffeId]);
  });
});

describe("revoking one certificate ends the control-plane streams it authenticated", () => {
  it("cuts the ADS stream with UNAUTHENTICATED and the flow stream of that certificate only; the workload's other certificate keeps its streams", async () => {
    const { token } = await cp.identity.tokens.create({ name: "db", labels: { app: "db" }, ttlSeconds: 600 });
    const rotation = await attestWithJoinToken(controlPlane, token, closers);
    const leaked = rotation.current();
    const renewed = await rotation.renewNow();
    const leakedAds = await adsStream(leaked);
    const renewedAds = await adsStream(renewed);
    const leakedFlows = flowStream(leaked);
    const renewedFlows = flowStream(renewed);
    await once(leakedFlows.stream, "metadata", { signal: AbortSignal.timeout(5_000) });
    await once(renewedFlows.stream, "metadata", { signal: AbortSignal.timeout(5_000) });

    const serial = canonicalSerial(new X509Certificate(leaked.certChain[0] as Buffer).serialNumber);
    const adsCut = disconnected(leakedAds);
    const pushed = once(renewedAds, "ack", { signal: AbortSignal.timeout(5_000) });
    await cp.identity.registry.revokeCertificate(serial, "key leaked", cp.identity.ca.maxLeafTtlSeconds);

    const revoked = new RegExp(
      `certificate ${serial} of spiffe://sigil\\.local/workload/db was revoked at \\S+ \\(key leaked\\)`,
    );
    await expectCut(adsCut, leakedFlows.status, grpc.status.UNAUTHENTICATED, revoked);

    // The renewed certificate's streams stay: its ADS stream hears of the revocation, its flows are acknowledged.
    await pushed;
    expect(cp.xds.ads.status().filter((s) => s.key === leaked.spiffeId)).toHaveLength(1);
    await expectAcked(renewedFlows.stream);

    // A new stream with the revoked certificate is refused the same way.
    const again = await refusedAds(leaked);
    expect(again.code).toBe(grpc.status.UNAUTHENTICATED);
    expect(again.details).toMatch(revoked);
  });
});
