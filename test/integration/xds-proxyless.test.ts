import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import * as grpcXds from "@grpc/grpc-js-xds";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startControlPlane, type ControlPlane } from "../../controlplane/control-plane.ts";
import type { AckEvent } from "../../xds/server.ts";
import { CLUSTER_LOAD_ASSIGNMENT } from "../../xds/type-urls.ts";
import { nextEvent } from "./xds-harness.ts";

/** A tiny unary service whose answer names the backend that served it. */
const WHO = "/sigil.test.Backend/Who";
const json = {
  serialize: (v: unknown) => Buffer.from(JSON.stringify(v)),
  deserialize: (b: Buffer) => JSON.parse(b.toString()) as { backend: string },
};
const backendService: grpc.ServiceDefinition = {
  Who: {
    path: WHO,
    requestStream: false,
    responseStream: false,
    requestSerialize: json.serialize,
    requestDeserialize: json.deserialize,
    responseSerialize: json.serialize,
    responseDeserialize: json.deserialize,
  },
};

async function startBackend(name: string): Promise<{ port: number; server: grpc.Server }> {
  const server = new grpc.Server();
  server.addService(backendService, {
    Who: (_call: grpc.ServerUnaryCall<unknown, unknown>, cb: grpc.sendUnaryData<unknown>) =>
      cb(null, { backend: name }),
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, p) =>
      err ? reject(err) : resolve(p),
    ),
  );
  return { port, server };
}

let dataDir: string;
let cp: ControlPlane;
let a: { port: number; server: grpc.Server };
let b: { port: number; server: grpc.Server };
let client: grpc.Client;

beforeAll(async () => {
  dataDir = await mkdtemp(join(tmpdir(), "sg-xds-"));
  cp = await startControlPlane({
    dataDir,
    grpc: { host: "127.0.0.1", port: 0 },
    xdsPlaintext: { host: "127.0.0.1", port: 0 },
    http: { host: "127.0.0.1", port: 0 },
    serverNames: ["localhost"],
    log: pino({ level: "silent" }),
  });
  [a, b] = await Promise.all([startBackend("A"), startBackend("B")]);
  // The unmodified third-party client: only its bootstrap points at Sigil. It supports
  // `insecure` and `google_default` channel credentials, so it uses the loopback plaintext listener.
  process.env.GRPC_XDS_BOOTSTRAP_CONFIG = JSON.stringify({
    xds_servers: [
      {
        server_uri: `127.0.0.1:${cp.grpc.plaintextPort}`,
        channel_creds: [{ type: "insecure" }],
        server_features: ["xds_v3"],
      },
    ],
    node: { id: "proxyless-client-1", cluster: "test", locality: { region: "r1", zone: "z1" } },
  });
  grpcXds.register();
});

afterAll(async () => {
  client?.close();
  a?.server.forceShutdown();
  b?.server.forceShutdown();
  await cp?.close();
  await rm(dataDir, { recursive: true, force: true });
});

function who(c: grpc.Client): Promise<string> {
  return new Promise((resolve, reject) => {
    c.makeUnaryRequest(
      WHO,
      json.serialize,
      json.deserialize,
      {},
      { deadline: Date.now() + 5_000 },
      (err: grpc.ServiceError | null, res?: { backend: string }) =>
        err ? reject(err) : resolve(res?.backend ?? ""),
    );
  });
}

describe("unmodified @grpc/grpc-js-xds client against Sigil's xDS", () => {
  it("resolves xds:///echo through Sigil, calls backend A, then follows the endpoint move to B", async () => {
    cp.xds.publisher.setServices([{ name: "echo", endpoints: [{ address: "127.0.0.1", port: a.port }] }]);
    client = new grpc.Client("xds:///echo", grpc.credentials.createInsecure());
    expect(await who(client)).toBe("A");
    expect(await who(client)).toBe("A");

    const acked = nextEvent<AckEvent>(
      cp.xds.ads,
      "ack",
      (e) => e.nodeId === "proxyless-client-1" && e.typeUrl === CLUSTER_LOAD_ASSIGNMENT,
    );
    const moved = Date.now();
    cp.xds.publisher.setServices([{ name: "echo", endpoints: [{ address: "127.0.0.1", port: b.port }] }]);
    await acked;
    // The client must follow: keep calling until B answers. The bound only ends a broken run; how
    // fast a client follows is a figure for bench/, not a verdict a loaded machine may change.
    let last = "";
    while (Date.now() - moved < 15_000) {
      last = await who(client);
      if (last === "B") break;
    }
    expect(last).toBe("B");
    expect(await who(client)).toBe("B");

    // The status API shows the proxyless node with all four types acknowledged.
    const res = await fetch(`http://127.0.0.1:${cp.httpPort}/api/xds/streams`, {
      headers: { authorization: `Bearer ${cp.httpAuth.token}` },
    });
    const body = (await res.json()) as {
      streams: {
        nodeId: string;
        protocol: string;
        types: { typeUrl: string; state: string; subscription: unknown }[];
      }[];
    };
    const node = body.streams.find((s) => s.nodeId === "proxyless-client-1");
    expect(node?.protocol).toBe("sotw");
    expect(node?.types.map((t) => t.state)).toEqual(["acked", "acked", "acked", "acked"]);
    expect(node?.types.find((t) => t.typeUrl === CLUSTER_LOAD_ASSIGNMENT)?.subscription).toEqual([
      "cluster/echo",
    ]);
  });

  it("refuses the stream of a node the authorizer rejects", async () => {
    const other = await startControlPlane({
      dataDir,
      grpc: { host: "127.0.0.1", port: 0 },
      xdsPlaintext: { host: "127.0.0.1", port: 0 },
      http: { host: "127.0.0.1", port: 0 },
      serverNames: ["localhost"],
      log: pino({ level: "silent" }),
      authorizeNode: (node) => {
        throw new Error(`no certificate proves ${node.id}`);
      },
    });
    try {
      const { XdsClient } = await import("../../xds/client.ts");
      const c = new XdsClient({
        target: `127.0.0.1:${other.grpc.plaintextPort}`,
        credentials: grpc.credentials.createInsecure(),
        node: { id: "intruder" },
        protocol: "sotw",
        registry: other.xds.registry,
        backoff: { initialMs: 10_000, maxMs: 10_000, multiplier: 1, jitter: 0 },
      });
      c.subscribe(CLUSTER_LOAD_ASSIGNMENT);
      const down = nextEvent<{ code: number; details: string }>(c, "disconnected");
      c.start();
      const status = await down;
      c.close();
      expect(status.code).toBe(grpc.status.PERMISSION_DENIED);
      expect(status.details).toContain("no certificate proves intruder");
    } finally {
      await other.close();
    }
  });
});
