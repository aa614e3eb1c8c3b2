import { writeFile } from "node:fs/promises";
import { Session } from "node:inspector/promises";
import { startGrpcServer } from "../../controlplane/grpc-server.ts";
import { createSelfSignedServingCert } from "../../test/support/serving-cert.ts";
import { createXdsService } from "../../controlplane/xds/service.ts";
import { ResourceSet } from "../../xds/snapshot.ts";
import { POLICY_SET } from "../../xds/type-urls.ts";
import { now } from "./children.ts";
import { classOf, nodeId, policyFor, POLICY_CLASSES, sharedResources } from "./fixtures.ts";
import { openReplicaStore, type ReplicaStore } from "./replica-store.ts";

/**
 * The control-plane side of the benchmark, in its own process so its heap is measured alone.
 * With `--etcd <endpoints> --replica <i>` it is one of several replicas: a policy change is written
 * to etcd through one of them ("apply", with the control plane's own etcd policy writer), and every
 * replica republishes when its watch sees the change, as the control plane's replicas do.
 */

type Command =
  | { kind: "populate"; clients: number }
  | { kind: "heap" }
  | { kind: "change" }
  | { kind: "apply" }
  | { kind: "cpu" }
  | { kind: "profile-start" }
  | { kind: "profile-stop"; file: string }
  | { kind: "exit" };

/** CPU profiles of chosen windows (initial sync, the changes), written as .cpuprofile files. */
const profiler = new Session();
profiler.connect();

const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error("run with --expose-gc");

function heapUsed(): number {
  gc?.();
  gc?.();
  return process.memoryUsage().heapUsed;
}

const send = (msg: unknown) => process.send?.(msg);
const xds = createXdsService();
const cert = await createSelfSignedServingCert(["localhost"]);
const grpc = await startGrpcServer({
  host: "127.0.0.1",
  port: 0,
  tls: { keyPem: cert.keyPem, certPem: cert.certPem },
});
grpc.addService(xds.ads.definition, xds.ads.implementation);

for (const r of sharedResources(xds.registry)) xds.publisher.setShared(r.typeUrl, [r]);
let generation = 1;
let classSets = buildClassSets(generation);
let clients = 0;

function buildClassSets(gen: number): ResourceSet[] {
  return Array.from(
    { length: POLICY_CLASSES },
    (_, c) => new ResourceSet(POLICY_SET, [policyFor(xds.registry, c, gen)]),
  );
}

function publishPolicies(): void {
  xds.publisher.batch(() => {
    for (let i = 0; i < clients; i++)
      xds.publisher.setNodeResources(nodeId(i), POLICY_SET, classSets[classOf(i)] as ResourceSet);
  });
}

/**
 * The policy change: a mesh-wide egress rule changes, so every class's PolicySet is recompiled and
 * every node's snapshot republished; reports once `expected` nodes have ACKed the new PolicySet.
 */
function change(expected: number): void {
  const acked = new Set<string>();
  const start = performance.now();
  const cpu = process.cpuUsage();
  const converged = (): void => {
    const used = process.cpuUsage(cpu);
    send({
      kind: "converged",
      ms: performance.now() - start,
      at: now(),
      publishMs,
      cpuMs: (used.user + used.system) / 1000,
      streams: expected,
    });
  };
  const onAck = (e: { nodeId: string; typeUrl: string }) => {
    if (e.typeUrl !== POLICY_SET || acked.has(e.nodeId)) return;
    acked.add(e.nodeId);
    if (acked.size === expected) {
      xds.ads.off("ack", onAck);
      converged();
    }
  };
  xds.ads.on("ack", onAck);
  classSets = buildClassSets(generation);
  publishPolicies();
  const publishMs = performance.now() - start;
  if (expected === 0) {
    xds.ads.off("ack", onAck);
    converged();
  }
}

const etcdArg = process.argv.indexOf("--etcd");
const replica =
  etcdArg < 0
    ? undefined
    : await openReplicaStore(process.argv[etcdArg + 1]?.split(",") ?? [], (revision) => {
        // etcd's revision of the change is the generation every replica compiles from.
        generation = revision;
        send({ kind: "watched", at: now() });
        change(xds.ads.streamCount);
      });

send({ kind: "ready", port: grpc.port, certPem: cert.certPem, baselineHeap: heapUsed() });

process.on("message", (cmd: Command) => {
  switch (cmd.kind) {
    case "populate":
      clients = cmd.clients;
      publishPolicies();
      send({ kind: "populated" });
      break;
    case "heap":
      send({ kind: "heap", heapUsed: heapUsed(), streams: xds.ads.streamCount });
      break;
    case "change":
      generation++;
      change(clients);
      break;
    case "apply":
      void (replica as ReplicaStore).apply().then((at) => send({ kind: "applied", at }));
      break;
    case "cpu": {
      const used = process.cpuUsage();
      send({ kind: "cpu", ms: (used.user + used.system) / 1000 });
      break;
    }
    case "profile-start":
      void profiler
        .post("Profiler.enable")
        .then(() => profiler.post("Profiler.start"))
        .then(() => send({ kind: "profiling" }));
      break;
    case "profile-stop":
      void profiler
        .post("Profiler.stop")
        .then(({ profile }) => writeFile(cmd.file, JSON.stringify(profile)))
        .then(() => send({ kind: "profiled" }));
      break;
    case "exit":
      void grpc.close(0).then(() => process.exit(0));
      break;
  }
});
