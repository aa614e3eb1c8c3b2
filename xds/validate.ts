import protobuf from "protobufjs";

/** A resource (or embedded Any) that does not match its schema; `path` names the offending field. */
export class ResourceValidationError extends Error {
  constructor(
    readonly resource: string,
    readonly path: string,
    readonly reason: string,
  ) {
    super(`${resource}: ${path || "<root>"}: ${reason}`);
  }
}

/** Decides which type URLs may appear inside a `google.protobuf.Any`. */
export interface AnyTypeResolver {
  resolveAny(typeUrl: string): protobuf.Type | undefined;
}

const ANY = ".google.protobuf.Any";
const INT32 = new Set(["int32", "sint32", "sfixed32"]);
const UINT32 = new Set(["uint32", "fixed32"]);
const INT64 = new Set(["int64", "sint64", "sfixed64"]);
const UINT64 = new Set(["uint64", "fixed64"]);
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

/**
 * Checks `value` against `type` field by field and returns the object protobufjs `fromObject`
 * can take without losing anything: every key must be a field of the message (protobufjs would
 * drop an unknown one silently), every enum must name or number one of its values, every scalar
 * must have its wire type's shape, at most one member of a oneof may be set, and every Any must
 * be written as `{"@type": "<registered type URL>", ...fields}` — its content is validated the
 * same way and packed here, so an Any can never go out empty. Map keys are sorted so equal
 * content always encodes to equal bytes.
 */
export function normalizeMessage(
  type: protobuf.Type,
  value: unknown,
  resource: string,
  anyTypes: AnyTypeResolver,
  path = "",
): Record<string, unknown> {
  if (!isPlainObject(value)) {
    throw new ResourceValidationError(
      resource,
      path,
      `expected a ${type.fullName.slice(1)} object, got ${describe(value)}`,
    );
  }
  const out: Record<string, unknown> = {};
  for (const [key, raw] of Object.entries(value)) {
    const field = type.fields[key];
    const fieldPath = path ? `${path}.${key}` : key;
    if (!field) {
      throw new ResourceValidationError(
        resource,
        fieldPath,
        `unknown field of ${type.fullName.slice(1)}${hint(type, key)}`,
      );
    }
    if (raw === undefined || raw === null) continue;
    field.resolve();
    if (field.map) {
      if (!isPlainObject(raw))
        throw new ResourceValidationError(resource, fieldPath, `expected a map, got ${describe(raw)}`);
      const map: Record<string, unknown> = {};
      for (const k of Object.keys(raw).sort()) {
        checkMapKey(
          (field as unknown as protobuf.MapField).keyType,
          k,
          resource,
          `${fieldPath}[${JSON.stringify(k)}]`,
        );
        map[k] = normalizeValue(field, raw[k], resource, anyTypes, `${fieldPath}[${JSON.stringify(k)}]`);
      }
      out[key] = map;
    } else if (field.repeated) {
      if (!Array.isArray(raw))
        throw new ResourceValidationError(resource, fieldPath, `expected a list, got ${describe(raw)}`);
      out[key] = raw.map((item, i) => normalizeValue(field, item, resource, anyTypes, `${fieldPath}[${i}]`));
    } else {
      out[key] = normalizeValue(field, raw, resource, anyTypes, fieldPath);
    }
  }
  for (const oneof of type.oneofsArray) {
    const set = oneof.fieldsArray.filter((f) => out[f.name] !== undefined).map((f) => f.name);
    if (set.length > 1) {
      throw new ResourceValidationError(
        resource,
        path ? `${path}.${oneof.name}` : oneof.name,
        `oneof has more than one member set: ${set.join(", ")}`,
      );
    }
  }
  return out;
}

/** Validates, packs and encodes one message; the bytes are checked to re-encode identically. */
export function encodeStrict(
  type: protobuf.Type,
  value: unknown,
  resource: string,
  anyTypes: AnyTypeResolver,
  path = "",
): Uint8Array {
  const normalized = normalizeMessage(type, value, resource, anyTypes, path);
  const message = type.fromObject(normalized);
  const problem = type.verify(message);
  if (problem) throw new ResourceValidationError(resource, path, problem);
  const bytes = type.encode(message).finish();
  // Every byte produced must be understood by the schema: decode and re-encode must be lossless.
  const again = type.encode(type.decode(bytes)).finish();
  if (!Buffer.from(again).equals(Buffer.from(bytes))) {
    throw new ResourceValidationError(
      resource,
      path,
      `${type.fullName.slice(1)} does not survive a decode/encode round trip`,
    );
  }
  return bytes;
}

function normalizeValue(
  field: protobuf.Field,
  value: unknown,
  resource: string,
  anyTypes: AnyTypeResolver,
  path: string,
): unknown {
  if (value === null || value === undefined) {
    throw new ResourceValidationError(resource, path, "null is not a value (omit the field instead)");
  }
  const resolved = field.resolvedType;
  if (resolved instanceof protobuf.Enum) return checkEnum(resolved, value, resource, path);
  if (resolved instanceof protobuf.Type) {
    if (resolved.fullName === ANY) return packAny(value, resource, anyTypes, path);
    return normalizeMessage(resolved, value, resource, anyTypes, path);
  }
  return checkScalar(field.type, value, resource, path);
}

function packAny(
  value: unknown,
  resource: string,
  anyTypes: AnyTypeResolver,
  path: string,
): Record<string, unknown> {
  if (!isPlainObject(value))
    throw new ResourceValidationError(resource, path, `expected an Any object, got ${describe(value)}`);
  const typeUrl = value["@type"];
  if (typeof typeUrl !== "string" || typeUrl === "") {
    throw new ResourceValidationError(
      resource,
      path,
      'an Any must name its type in "@type" so its content can be validated',
    );
  }
  const inner = anyTypes.resolveAny(typeUrl);
  if (!inner)
    throw new ResourceValidationError(
      resource,
      `${path}.@type`,
      `type ${typeUrl} is not registered for use in an Any`,
    );
  const { "@type": _ignored, ...fields } = value;
  return { type_url: typeUrl, value: encodeStrict(inner, fields, resource, anyTypes, path) };
}

function checkEnum(type: protobuf.Enum, value: unknown, resource: string, path: string): string | number {
  if (typeof value === "string" && Object.prototype.hasOwnProperty.call(type.values, value)) return value;
  if (typeof value === "number" && Object.values(type.values).includes(value)) return value;
  const allowed = Object.keys(type.values).join(", ");
  throw new ResourceValidationError(
    resource,
    path,
    `${describe(value)} is not a value of enum ${type.name} (one of ${allowed})`,
  );
}

function checkScalar(kind: string, value: unknown, resource: string, path: string): unknown {
  const fail = (expected: string): never => {
    throw new ResourceValidationError(resource, path, `expected ${expected}, got ${describe(value)}`);
  };
  switch (kind) {
    case "string":
      return typeof value === "string" ? value : fail("a string");
    case "bool":
      return typeof value === "boolean" ? value : fail("a boolean");
    case "double":
    case "float":
      return typeof value === "number" && Number.isFinite(value) ? value : fail("a finite number");
    case "bytes":
      if (value instanceof Uint8Array) return value;
      return typeof value === "string" && BASE64.test(value) && value.length % 4 === 0
        ? value
        : fail("bytes or base64 text");
  }
  if (INT32.has(kind)) return isIntIn(value, -(2 ** 31), 2 ** 31 - 1) ? value : fail("a 32-bit integer");
  if (UINT32.has(kind)) return isIntIn(value, 0, 2 ** 32 - 1) ? value : fail("an unsigned 32-bit integer");
  if (INT64.has(kind) || UINT64.has(kind)) {
    const unsigned = UINT64.has(kind);
    if (typeof value === "number" && Number.isSafeInteger(value) && (!unsigned || value >= 0)) return value;
    if (typeof value === "string" && (unsigned ? /^\d{1,20}$/ : /^-?\d{1,19}$/).test(value)) {
      const big = BigInt(value);
      const [lo, hi] = unsigned ? [0n, 2n ** 64n - 1n] : [-(2n ** 63n), 2n ** 63n - 1n];
      if (big >= lo && big <= hi) return value;
    }
    return fail(
      unsigned
        ? "an unsigned 64-bit integer (number or decimal string)"
        : "a 64-bit integer (number or decimal string)",
    );
  }
  return fail(`a ${kind}`);
}

function checkMapKey(keyType: string, key: string, resource: string, path: string): void {
  if (keyType === "string") return;
  if (keyType === "bool") {
    if (key !== "true" && key !== "false")
      throw new ResourceValidationError(resource, path, "map key must be true or false");
    return;
  }
  if (!/^-?\d+$/.test(key)) throw new ResourceValidationError(resource, path, `map key must be a ${keyType}`);
  checkScalar(keyType, INT64.has(keyType) || UINT64.has(keyType) ? key : Number(key), resource, path);
}

function isIntIn(value: unknown, min: number, max: number): boolean {
  return typeof value === "number" && Number.isInteger(value) && value >= min && value <= max;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return false;
  const proto = Object.getPrototypeOf(value) as unknown;
  return proto === Object.prototype || proto === null;
}

function describe(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "a list";
  if (typeof value === "string") return JSON.stringify(value.length > 60 ? `${value.slice(0, 60)}…` : value);
  if (typeof value === "object") return "an object";
  return `${typeof value} ${String(value)}`;
}

/** Suggests the proto field name when the caller used camelCase or a different case. */
function hint(type: protobuf.Type, key: string): string {
  const snake = key.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
  const lower = key.toLowerCase();
  const match = type.fieldsArray.find((f) => f.name === snake || f.name.toLowerCase() === lower);
  return match ? ` (did you mean "${match.name}"?)` : "";
}
