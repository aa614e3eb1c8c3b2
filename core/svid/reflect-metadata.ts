/**
 * @peculiar/x509 resolves its ASN.1 providers through a dependency-injection container that needs
 * the Reflect metadata API (`Reflect.getMetadata`, `getOwnMetadata`, `defineMetadata`). Node does
 * not ship it, so this module installs a minimal, spec-shaped implementation when it is missing.
 * It must be evaluated before @peculiar/x509 is loaded: import `./x509.ts`, never the package.
 */
type MetadataMap = Map<unknown, unknown>;

const store = new WeakMap<object, Map<PropertyKey | undefined, MetadataMap>>();

function ownMap(target: object, property: PropertyKey | undefined, create: boolean): MetadataMap | undefined {
  let byProperty = store.get(target);
  if (!byProperty) {
    if (!create) return undefined;
    byProperty = new Map();
    store.set(target, byProperty);
  }
  let map = byProperty.get(property);
  if (!map && create) {
    map = new Map();
    byProperty.set(property, map);
  }
  return map;
}

interface ReflectMetadataApi {
  defineMetadata(key: unknown, value: unknown, target: object, property?: PropertyKey): void;
  getOwnMetadata(key: unknown, target: object, property?: PropertyKey): unknown;
  getMetadata(key: unknown, target: object, property?: PropertyKey): unknown;
  hasOwnMetadata(key: unknown, target: object, property?: PropertyKey): boolean;
  hasMetadata(key: unknown, target: object, property?: PropertyKey): boolean;
}

const api: ReflectMetadataApi = {
  defineMetadata(key, value, target, property) {
    ownMap(target, property, true)?.set(key, value);
  },
  getOwnMetadata(key, target, property) {
    return ownMap(target, property, false)?.get(key);
  },
  hasOwnMetadata(key, target, property) {
    return ownMap(target, property, false)?.has(key) ?? false;
  },
  getMetadata(key, target, property) {
    for (let t: object | null = target; t; t = Object.getPrototypeOf(t) as object | null) {
      const map = ownMap(t, property, false);
      if (map?.has(key)) return map.get(key);
    }
    return undefined;
  },
  hasMetadata(key, target, property) {
    for (let t: object | null = target; t; t = Object.getPrototypeOf(t) as object | null) {
      if (ownMap(t, property, false)?.has(key)) return true;
    }
    return false;
  },
};

const reflect = Reflect as unknown as Partial<ReflectMetadataApi>;
for (const [name, fn] of Object.entries(api) as [
  keyof ReflectMetadataApi,
  ReflectMetadataApi[keyof ReflectMetadataApi],
][]) {
  if (typeof reflect[name] !== "function")
    Object.defineProperty(Reflect, name, { value: fn, configurable: true, writable: true });
}
