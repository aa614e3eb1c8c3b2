import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, isAbsolute, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import protobuf from "protobufjs";

const require = createRequire(import.meta.url);
const xdsPackageDir = dirname(require.resolve("@grpc/grpc-js-xds/package.json"));

/** Where imports are resolved: the Envoy API and its dependencies as the grpc-js-xds package ships them, then Sigil's. */
export const PROTO_INCLUDE_DIRS: readonly string[] = [
  join(xdsPackageDir, "deps", "envoy-api"),
  join(xdsPackageDir, "deps", "xds"),
  join(xdsPackageDir, "deps", "googleapis"),
  join(xdsPackageDir, "deps", "protoc-gen-validate"),
  resolve(dirname(fileURLToPath(import.meta.url)), "..", "core", "proto"),
];

/** Envoy resources and protocol messages the xDS layer serves and speaks. */
export const ENVOY_PROTO_FILES: readonly string[] = [
  "envoy/service/discovery/v3/ads.proto",
  "envoy/service/discovery/v3/discovery.proto",
  "envoy/config/listener/v3/listener.proto",
  "envoy/config/route/v3/route.proto",
  "envoy/config/cluster/v3/cluster.proto",
  "envoy/config/endpoint/v3/endpoint.proto",
  "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto",
  "envoy/extensions/filters/http/router/v3/router.proto",
];

/** Sigil's own resources carried over xDS. */
export const SIGIL_PROTO_FILES: readonly string[] = [
  "sigil/v1/common.proto",
  "sigil/v1/trust_bundle.proto",
  "sigil/v1/policy.proto",
  "sigil/v1/peer_directory.proto",
  "sigil/v1/revocation.proto",
  "sigil/v1/workload_identity.proto",
];

let shared: protobuf.Root | undefined;

/**
 * One protobufjs root holding every message the xDS layer may meet, so that an Any inside a
 * resource always resolves against the same root it is validated with. Field names stay as
 * written in the .proto files (snake_case), matching Envoy's documentation.
 */
export function xdsRoot(): protobuf.Root {
  if (!shared) shared = loadRoot([...ENVOY_PROTO_FILES, ...SIGIL_PROTO_FILES]);
  return shared;
}

/** protobufjs bundles only some well-known types; Envoy's protos also import these. */
function registerBundledWellKnownTypes(): void {
  for (const name of ["api", "descriptor", "source_context", "type"]) {
    const json = require(`protobufjs/google/protobuf/${name}.json`) as {
      nested: { google: { nested: { protobuf: { nested: protobuf.INamespace["nested"] } } } };
    };
    const nested = json.nested.google.nested.protobuf.nested;
    if (nested) protobuf.common(name, nested as Record<string, protobuf.INamespace>);
  }
}

function loadRoot(files: readonly string[]): protobuf.Root {
  registerBundledWellKnownTypes();
  const root = new protobuf.Root();
  root.resolvePath = (origin, target) => {
    if (isAbsolute(target)) return target;
    for (const dir of PROTO_INCLUDE_DIRS) {
      const candidate = join(dir, target);
      if (existsSync(candidate)) return candidate;
    }
    return protobuf.util.path.resolve(origin, target);
  };
  root.loadSync(files as string[], { keepCase: true });
  root.resolveAll();
  return root;
}
