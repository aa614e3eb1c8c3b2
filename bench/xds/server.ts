import { writeFile } from "node:fs/promises";
import { Session } from "node:inspector/promises";
import { startGrpcServer } from "../../controlplane/grpc-server.ts";
import { createSelfSignedServingCert } from "../../test/support/serving-cert.ts";
import { createXdsService } from "../../controlplane/xds/service.ts";
import { ResourceSet } from "../../xds/snapshot.ts";
import { POLICY_SET } from "../../xds/type-urls.ts";
import { classOf, nodeId, policyFor, POLICY_CLASSES, sharedResources } from "./fixtures.ts";

/** The control-plane side of the benchmark, in its own process so its heap is measured alone. */

type Command =
  | { kind: "populate"; clients: number }
  | { kind: "heap" }
  | { kind: "change" }
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
    case "change": {
      const acked = new Set<string>();
      let publishMs = 0;
      const start = performance.now();
      const cpu = process.cpuUsage();
      const onAck = (e: { nodeId: string; typeUrl: string }) => {
        if (e.typeUrl !== POLICY_SET || acked.has(e.nodeId)) return;
        acked.add(e.nodeId);
        if (acked.size === clients) {
          xds.ads.off("ack", onAck);
          const used = process.cpuUsage(cpu);
          send({
            kind: "converged",
            ms: performance.now() - start,
            publishMs,
            cpuMs: (used.user + used.system) / 1000,
          });
        }
      };
      xds.ads.on("ack", onAck);
      // The policy change: a mesh-wide egress rule changes, so every class's PolicySet is recompiled.
      generation++;
      classSets = buildClassSets(generation);
      publishPolicies();
      publishMs = performance.now() - start;
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
