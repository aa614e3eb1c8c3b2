import type * as grpc from "@grpc/grpc-js";
import protobuf from "protobufjs";
import { xdsRoot } from "./protos.ts";

/** Envoy's core.v3.Node as Sigil reads it. */
export interface NodeInfo {
  id: string;
  cluster: string;
  /** Free-form metadata (google.protobuf.Struct, decoded to plain JSON). */
  metadata: Record<string, unknown>;
  locality: { region: string; zone: string; sub_zone: string } | undefined;
  user_agent_name: string;
}

export interface ErrorDetail {
  code: number;
  message: string;
}

/** A decoded DiscoveryRequest (state of the world). */
export interface SotwRequest {
  version_info: string;
  node: NodeWire | null;
  resource_names: string[];
  type_url: string;
  response_nonce: string;
  error_detail: ErrorDetail | null;
}

/** A decoded DeltaDiscoveryRequest. */
export interface DeltaRequest {
  node: NodeWire | null;
  type_url: string;
  resource_names_subscribe: string[];
  resource_names_unsubscribe: string[];
  initial_resource_versions: Record<string, string>;
  response_nonce: string;
  error_detail: ErrorDetail | null;
}

export interface AnyWire {
  type_url: string;
  value: Uint8Array;
}

export interface SotwResponse {
  version_info: string;
  resources: AnyWire[];
  type_url: string;
  nonce: string;
}

export interface DeltaResponse {
  system_version_info: string;
  resources: { name: string; version: string; resource: AnyWire | null }[];
  type_url: string;
  removed_resources: string[];
  nonce: string;
}

export type NodeWire = protobuf.Message & Record<string, unknown>;

interface Wire {
  sotwRequest: protobuf.Type;
  sotwResponse: protobuf.Type;
  deltaRequest: protobuf.Type;
  deltaResponse: protobuf.Type;
  node: protobuf.Type;
  struct: protobuf.Type;
}

let wire: Wire | undefined;

function types(): Wire {
  if (!wire) {
    const root = xdsRoot();
    wire = {
      sotwRequest: root.lookupType("envoy.service.discovery.v3.DiscoveryRequest"),
      sotwResponse: root.lookupType("envoy.service.discovery.v3.DiscoveryResponse"),
      deltaRequest: root.lookupType("envoy.service.discovery.v3.DeltaDiscoveryRequest"),
      deltaResponse: root.lookupType("envoy.service.discovery.v3.DeltaDiscoveryResponse"),
      node: root.lookupType("envoy.config.core.v3.Node"),
      struct: root.lookupType("google.protobuf.Struct"),
    };
  }
  return wire;
}

/** Reads a node from a request into the fields Sigil uses. */
export function nodeInfo(node: NodeWire): NodeInfo {
  const t = types();
  const plain = t.node.toObject(node, { defaults: true, longs: String, enums: String }) as Record<
    string,
    unknown
  >;
  const locality = plain.locality as NodeInfo["locality"] | undefined;
  return {
    id: String(plain.id ?? ""),
    cluster: String(plain.cluster ?? ""),
    metadata: node.metadata ? structToJson(node.metadata as protobuf.Message) : {},
    locality: locality ?? undefined,
    user_agent_name: String(plain.user_agent_name ?? ""),
  };
}

function structToJson(struct: protobuf.Message): Record<string, unknown> {
  const plain = types().struct.toObject(struct, { defaults: false }) as { fields?: Record<string, unknown> };
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(plain.fields ?? {})) out[k] = valueToJson(v as Record<string, unknown>);
  return out;
}

// protobufjs loads the google.protobuf well-known types with camelCase field names (unlike the
// Envoy and Sigil protos, loaded with keepCase), so Struct values are stringValue, numberValue, ...
function valueToJson(v: Record<string, unknown>): unknown {
  if ("stringValue" in v) return v.stringValue;
  if ("numberValue" in v) return v.numberValue;
  if ("boolValue" in v) return v.boolValue;
  if ("structValue" in v) {
    const fields = (v.structValue as { fields?: Record<string, Record<string, unknown>> }).fields ?? {};
    return Object.fromEntries(Object.entries(fields).map(([k, x]) => [k, valueToJson(x)]));
  }
  if ("listValue" in v) {
    const values = (v.listValue as { values?: Record<string, unknown>[] }).values ?? [];
    return values.map(valueToJson);
  }
  return null;
}

/** A node object as a client puts it in its first request (metadata as plain JSON). */
export interface NodeSpec {
  id: string;
  cluster?: string;
  metadata?: Record<string, string | number | boolean>;
  locality?: { region?: string; zone?: string; sub_zone?: string };
  user_agent_name?: string;
}

export function nodeToWire(node: NodeSpec): Record<string, unknown> {
  const fields: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(node.metadata ?? {})) {
    fields[k] =
      typeof v === "string"
        ? { stringValue: v }
        : typeof v === "number"
          ? { numberValue: v }
          : { boolValue: v };
  }
  return {
    id: node.id,
    cluster: node.cluster ?? "",
    metadata: { fields },
    locality: node.locality ?? {},
    user_agent_name: node.user_agent_name ?? "sigil",
  };
}

const CONTROL_PLANE = new protobuf.Writer()
  .uint32((1 << 3) | 2)
  .string("sigil")
  .finish();

/** DiscoveryResponse bytes: header fields plus pre-encoded `resources` entries. */
export function encodeSotwResponse(
  versionInfo: string,
  typeUrl: string,
  nonce: string,
  body: Buffer,
): Buffer {
  const head = new protobuf.Writer()
    .uint32((1 << 3) | 2)
    .string(versionInfo)
    .uint32((4 << 3) | 2)
    .string(typeUrl)
    .uint32((5 << 3) | 2)
    .string(nonce)
    .uint32((6 << 3) | 2)
    .bytes(CONTROL_PLANE)
    .finish();
  return Buffer.concat([head, body]);
}

/** DeltaDiscoveryResponse bytes: header fields, pre-encoded Resource entries, removed names. */
export function encodeDeltaResponse(
  systemVersion: string,
  typeUrl: string,
  nonce: string,
  entries: readonly Buffer[],
  removed: readonly string[],
): Buffer {
  const w = new protobuf.Writer()
    .uint32((1 << 3) | 2)
    .string(systemVersion)
    .uint32((4 << 3) | 2)
    .string(typeUrl)
    .uint32((5 << 3) | 2)
    .string(nonce)
    .uint32((7 << 3) | 2)
    .bytes(CONTROL_PLANE);
  for (const name of removed) w.uint32((6 << 3) | 2).string(name);
  return Buffer.concat([w.finish(), ...entries]);
}

/**
 * Decoded messages are used as they come: protobufjs puts proto3 defaults (empty strings and
 * lists, null sub-messages) on the prototype, which is exactly the shape of the interfaces above,
 * and skipping a conversion to plain objects keeps ten thousand streams cheap.
 */
function decoder<T>(type: () => protobuf.Type): (buf: Buffer) => T {
  return (buf) => type().decode(buf) as unknown as T;
}

function encoder(type: () => protobuf.Type): (value: object) => Buffer {
  return (value) => {
    const t = type();
    return Buffer.from(t.encode(t.fromObject(value)).finish());
  };
}

const identity = (b: Buffer): Buffer => b;
const ADS = "/envoy.service.discovery.v3.AggregatedDiscoveryService";

/**
 * The ADS service with Sigil's serializers: responses are written as ready-made bytes (resources
 * encoded once, shared by all streams); requests are decoded to plain objects.
 */
export const adsServiceDefinition: grpc.ServiceDefinition = {
  StreamAggregatedResources: {
    path: `${ADS}/StreamAggregatedResources`,
    requestStream: true,
    responseStream: true,
    requestSerialize: encoder(() => types().sotwRequest),
    requestDeserialize: decoder<SotwRequest>(() => types().sotwRequest),
    responseSerialize: identity,
    responseDeserialize: decoder<SotwResponse>(() => types().sotwResponse),
  },
  DeltaAggregatedResources: {
    path: `${ADS}/DeltaAggregatedResources`,
    requestStream: true,
    responseStream: true,
    requestSerialize: encoder(() => types().deltaRequest),
    requestDeserialize: decoder<DeltaRequest>(() => types().deltaRequest),
    responseSerialize: identity,
    responseDeserialize: decoder<DeltaResponse>(() => types().deltaResponse),
  },
};
