import { createHash } from "node:crypto";
import protobuf from "protobufjs";
import { xdsRoot } from "./protos.ts";
import * as T from "./type-urls.ts";
import { encodeStrict, ResourceValidationError, type AnyTypeResolver } from "./validate.ts";

/** How the xDS layer treats one resource type. */
export interface ResourceTypeSpec {
  readonly typeUrl: string;
  /** The field of the resource that holds its name. */
  readonly nameField: string;
  /**
   * State-of-the-world responses carry every subscribed resource, and a resource missing from a
   * response is deleted (Envoy's rule for listeners and clusters). When false, absence means
   * nothing and a client keeps what it has (routes, endpoints).
   */
  readonly sotwFullState: boolean;
}

/** Only TypeRegistry.encode holds this, so every XdsResource in existence passed validation. */
const VALIDATED = Symbol("validated");

/** A validated resource, encoded once and shared by every snapshot and stream that carries it. */
export class XdsResource {
  /** `google.protobuf.Any` field 2 of a DiscoveryResponse (tag, length, Any bytes), ready to concatenate. */
  readonly sotwEntry: Buffer;
  private deltaEntryBytes: Buffer | undefined;

  constructor(
    token: typeof VALIDATED,
    readonly typeUrl: string,
    readonly name: string,
    /** Content hash: equal content, equal version, on every control-plane replica. */
    readonly version: string,
    /** The encoded resource message (the Any's value). */
    readonly value: Uint8Array,
  ) {
    if (token !== VALIDATED) throw new Error("XdsResource is created by TypeRegistry.encode only");
    const any = new protobuf.Writer()
      .uint32((1 << 3) | 2)
      .string(typeUrl)
      .uint32((2 << 3) | 2)
      .bytes(value)
      .finish();
    this.sotwEntry = lengthDelimited(2, any);
  }

  /** `Resource` field 2 of a DeltaDiscoveryResponse, built on first use. */
  get deltaEntry(): Buffer {
    if (!this.deltaEntryBytes) {
      const head = new protobuf.Writer()
        .uint32((1 << 3) | 2)
        .string(this.version)
        .uint32((3 << 3) | 2)
        .string(this.name)
        .finish();
      // Resource.resource is field 2 as well, so the state-of-the-world entry is reused verbatim.
      this.deltaEntryBytes = lengthDelimited(2, Buffer.concat([head, this.sotwEntry]));
    }
    return this.deltaEntryBytes;
  }
}

function lengthDelimited(field: number, bytes: Uint8Array): Buffer {
  const header = new protobuf.Writer()
    .uint32((field << 3) | 2)
    .uint32(bytes.length)
    .finish();
  return Buffer.concat([header, bytes]);
}

/**
 * The resource types the xDS layer may carry, and the types that may appear inside an Any within
 * them. Nothing leaves the server unless it was built by `encode`, which validates strictly.
 */
export class TypeRegistry implements AnyTypeResolver {
  private readonly specs = new Map<string, ResourceTypeSpec>();
  private readonly embeddable = new Set<string>();

  constructor(readonly root: protobuf.Root = xdsRoot()) {}

  register(spec: ResourceTypeSpec): this {
    const type = this.lookup(spec.typeUrl);
    if (!type) throw new Error(`cannot register ${spec.typeUrl}: no such message in the loaded protos`);
    if (!type.fields[spec.nameField])
      throw new Error(`cannot register ${spec.typeUrl}: it has no field ${spec.nameField}`);
    this.specs.set(spec.typeUrl, spec);
    return this;
  }

  /** Allows a message type inside an Any (e.g. HTTP filter configurations) without making it a resource type. */
  allowInAny(typeUrl: string): this {
    if (!this.lookup(typeUrl))
      throw new Error(`cannot allow ${typeUrl} in Any: no such message in the loaded protos`);
    this.embeddable.add(typeUrl);
    return this;
  }

  spec(typeUrl: string): ResourceTypeSpec | undefined {
    return this.specs.get(typeUrl);
  }

  has(typeUrl: string): boolean {
    return this.specs.has(typeUrl);
  }

  typeOf(typeUrl: string): protobuf.Type {
    const spec = this.specs.get(typeUrl);
    const type = spec && this.lookup(typeUrl);
    if (!type) throw new Error(`resource type ${typeUrl} is not registered`);
    return type;
  }

  resolveAny(typeUrl: string): protobuf.Type | undefined {
    if (!this.specs.has(typeUrl) && !this.embeddable.has(typeUrl)) return undefined;
    return this.lookup(typeUrl);
  }

  /**
   * Validates `body` (field names as in the .proto, Anys as `{"@type": ...}`) and encodes it once.
   * Throws ResourceValidationError naming the resource and the field on any mismatch.
   */
  encode(typeUrl: string, body: unknown): XdsResource {
    const spec = this.specs.get(typeUrl);
    if (!spec)
      throw new ResourceValidationError(describeBody(typeUrl, body), "", `type ${typeUrl} is not registered`);
    const type = this.typeOf(typeUrl);
    const label = describeBody(typeUrl, body, spec.nameField);
    const name = (body as Record<string, unknown> | null)?.[spec.nameField];
    if (typeof name !== "string" || name === "") {
      throw new ResourceValidationError(label, spec.nameField, "a resource needs a non-empty name");
    }
    const value = encodeStrict(type, body, label, this);
    const version = createHash("sha256")
      .update(typeUrl)
      .update("\0")
      .update(value)
      .digest("base64url")
      .slice(0, 22);
    return new XdsResource(VALIDATED, typeUrl, name, version, value);
  }

  /** Decodes a received Any of a registered type into a plain object (enums as names, 64-bit ints as strings). */
  decode(typeUrl: string, value: Uint8Array): { name: string; message: Record<string, unknown> } {
    const spec = this.specs.get(typeUrl);
    if (!spec) throw new Error(`resource type ${typeUrl} is not registered`);
    const type = this.typeOf(typeUrl);
    const message = type.toObject(type.decode(value), {
      enums: String,
      longs: String,
      defaults: true,
      arrays: true,
      objects: true,
    });
    const name = message[spec.nameField];
    if (typeof name !== "string" || name === "")
      throw new Error(`${typeUrl} resource without ${spec.nameField}`);
    return { name, message };
  }

  private lookup(typeUrl: string): protobuf.Type | undefined {
    if (!typeUrl.startsWith(T.TYPE_PREFIX)) return undefined;
    try {
      return this.root.lookupType(typeUrl.slice(T.TYPE_PREFIX.length));
    } catch {
      return undefined;
    }
  }
}

function describeBody(typeUrl: string, body: unknown, nameField?: string): string {
  const short = typeUrl.slice(typeUrl.lastIndexOf(".") + 1);
  const name = nameField ? (body as Record<string, unknown> | null)?.[nameField] : undefined;
  return typeof name === "string" && name !== "" ? `${short} "${name}"` : short;
}

/** Envoy's four resource types as proxyless gRPC clients consume them, and Sigil's own. */
export function defaultTypeRegistry(): TypeRegistry {
  return new TypeRegistry()
    .register({ typeUrl: T.LISTENER, nameField: "name", sotwFullState: true })
    .register({ typeUrl: T.ROUTE_CONFIGURATION, nameField: "name", sotwFullState: false })
    .register({ typeUrl: T.CLUSTER, nameField: "name", sotwFullState: true })
    .register({ typeUrl: T.CLUSTER_LOAD_ASSIGNMENT, nameField: "cluster_name", sotwFullState: false })
    .allowInAny(T.HTTP_CONNECTION_MANAGER)
    .allowInAny(T.ROUTER)
    .register({ typeUrl: T.TRUST_BUNDLE, nameField: "trust_domain", sotwFullState: true })
    .register({ typeUrl: T.POLICY_SET, nameField: "name", sotwFullState: true })
    .register({ typeUrl: T.PEER_DIRECTORY, nameField: "name", sotwFullState: true })
    .register({ typeUrl: T.REVOCATION_LIST, nameField: "trust_domain", sotwFullState: true })
    .register({ typeUrl: T.WORKLOAD_IDENTITY, nameField: "spiffe_id", sotwFullState: true });
}
