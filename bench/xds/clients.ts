import * as grpc from "@grpc/grpc-js";
import { xdsRoot } from "../../xds/protos.ts";
import { PEER_DIRECTORY, POLICY_SET, REVOCATION_LIST, TRUST_BUNDLE } from "../../xds/type-urls.ts";
import { nodeToWire } from "../../xds/wire.ts";
import { nodeId } from "./fixtures.ts";

/**
 * Simulated sidecars: each one a real ADS stream over TLS that subscribes to Sigil's four types,
 * decodes every response and ACKs it. Streams are spread over a number of HTTP/2 connections.
 */

interface Start {
  kind: "start";
  port: number;
  certPem: string;
  clients: number;
  perConnection: number;
  protocol: "sotw" | "delta";
}

const TYPES = [TRUST_BUNDLE, PEER_DIRECTORY, REVOCATION_LIST, POLICY_SET];
const root = xdsRoot();
const Req = root.lookupType("envoy.service.discovery.v3.DiscoveryRequest");
const Res = root.lookupType("envoy.service.discovery.v3.DiscoveryResponse");
const DReq = root.lookupType("envoy.service.discovery.v3.DeltaDiscoveryRequest");
const DRes = root.lookupType("envoy.service.discovery.v3.DeltaDiscoveryResponse");
const send = (msg: unknown) => process.send?.(msg);

interface Decoded {
  type_url: string;
  nonce: string;
  version_info?: string;
}

function run(cfg: Start): void {
  const creds = grpc.credentials.createSsl(Buffer.from(cfg.certPem));
  const connections: grpc.Client[] = [];
  const sotw = cfg.protocol === "sotw";
  const path = sotw
    ? "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
    : "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";
  const encode = (v: object) => Buffer.from((sotw ? Req : DReq).encode(v).finish());
  const decode = (b: Buffer) => (sotw ? Res : DRes).decode(b) as unknown as Decoded;
  let synced = 0;
  for (let i = 0; i < cfg.clients; i++) {
    const conn = Math.floor(i / cfg.perConnection);
    if (!connections[conn]) {
      connections[conn] = new grpc.Client(`127.0.0.1:${cfg.port}`, creds, {
        "grpc.ssl_target_name_override": "localhost",
        // One HTTP/2 connection per simulated group, never shared with another group.
        "grpc.use_local_subchannel_pool": 1,
        "grpc.max_receive_message_length": -1,
      });
    }
    const call = (connections[conn] as grpc.Client).makeBidiStreamRequest(path, encode, decode);
    const pending = new Set(TYPES);
    call.on("data", (res: Decoded) => {
      call.write(
        sotw
          ? { type_url: res.type_url, version_info: res.version_info, response_nonce: res.nonce }
          : { type_url: res.type_url, response_nonce: res.nonce },
      );
      if (pending.delete(res.type_url) && pending.size === 0) {
        synced++;
        if (synced === cfg.clients) send({ kind: "synced" });
      }
    });
    call.on("error", (err: Error) => send({ kind: "error", message: `${nodeId(i)}: ${err.message}` }));
    TYPES.forEach((type_url, t) =>
      call.write(
        sotw
          ? { type_url, ...(t === 0 ? { node: nodeToWire({ id: nodeId(i) }) } : {}) }
          : {
              type_url,
              resource_names_subscribe: ["*"],
              ...(t === 0 ? { node: nodeToWire({ id: nodeId(i) }) } : {}),
            },
      ),
    );
  }
}

process.on("message", (msg: Start | { kind: "cpu" } | { kind: "exit" }) => {
  if (msg.kind === "start") run(msg);
  else if (msg.kind === "cpu") {
    const used = process.cpuUsage();
    send({ kind: "cpu", ms: (used.user + used.system) / 1000 });
  } else process.exit(0);
});
send({ kind: "ready" });
