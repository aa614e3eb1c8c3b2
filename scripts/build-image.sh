#!/usr/bin/env bash
# Builds the sidecar image sigil:<version> offline: no base image is pulled. The root filesystem is
# assembled from this machine: the node binary and the shared libraries it links, iptables (nft
# back end) with its libraries and xtables extension directory, Sigil's native addon, and one
# bundle of the in-pod commands (sigil init | sidecar | ready), then imported with `podman import`.
#
#   scripts/build-image.sh [--tag sigil:<version>] [--output <rootfs.tar>]
#
# Prints the image reference and its size. Honours CONTAINERS_CONF / CONTAINERS_STORAGE_CONF.
set -euo pipefail
cd "$(dirname "$0")/.."

version=$(node -p 'require("./package.json").version')
tag="sigil:${version}"
output=""
while [ $# -gt 0 ]; do
  case "$1" in
    --tag) tag="$2"; shift 2 ;;
    --output) output="$2"; shift 2 ;;
    *) echo "build-image: unknown argument $1" >&2; exit 2 ;;
  esac
done

for tool in node podman ldd tar; do
  command -v "$tool" >/dev/null || { echo "build-image: $tool is not installed (scripts/setup.sh installs it)" >&2; exit 1; }
done
addon=native/build/Release/sigil_native.node
[ -f "$addon" ] || { echo "build-image: $addon is missing: run npm ci first" >&2; exit 1; }
xtables_multi=$(command -v xtables-nft-multi || true)
[ -n "$xtables_multi" ] || { echo "build-image: xtables-nft-multi not found (Debian package iptables)" >&2; exit 1; }
xtables_dir=$(dirname "$(readlink -f "$(ldd "$xtables_multi" | awk '/libxtables/ {print $3}')")")/xtables
[ -d "$xtables_dir" ] || { echo "build-image: no xtables extension directory at $xtables_dir" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root="$work/rootfs"
app="$root/opt/sigil/app"
mkdir -p "$root"/{usr/bin,usr/sbin,etc,tmp,run,var/run/sigil/bundle,var/run/sigil/token} "$app/build/Release"
chmod 1777 "$root/tmp"

# Copies a file to the same path inside the root filesystem, following symlinks.
put() { mkdir -p "$root$(dirname "$1")"; cp -L "$1" "$root$1"; }
# The shared libraries (and the loader) a binary needs, at the paths it looks for them.
put_libs() { ldd "$1" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | while read -r lib; do put "$lib"; done; }

node_bin=$(readlink -f "$(command -v node)")
cp "$node_bin" "$root/usr/bin/node"
put_libs "$node_bin"

cp "$xtables_multi" "$root/usr/sbin/xtables-nft-multi"
put_libs "$xtables_multi"
for family in iptables ip6tables; do
  for suffix in "" -save -restore; do
    ln -s xtables-nft-multi "$root/usr/sbin/${family}${suffix}"
    ln -s xtables-nft-multi "$root/usr/sbin/${family}-nft${suffix}"
  done
done
# Without the extension directory every match (`-p tcp --dport`, `-m owner`) is an "unknown option".
mkdir -p "$root$xtables_dir"
cp "$xtables_dir"/*.so "$root$xtables_dir/"
for ext in "$xtables_dir"/*.so; do put_libs "$ext"; done

cp "$addon" "$app/build/Release/"
put_libs "$addon"

npx esbuild cmd/sigil-pod/main.ts --bundle --platform=node --format=esm --target=node20 \
  --outfile="$app/sigil.mjs" --log-level=warning \
  --banner:js="import { createRequire as __sigilRequire } from 'node:module'; const require = __sigilRequire(import.meta.url);"
# Protocol definitions read at run time: Sigil's own (next to the bundle, and where xds/ looks for
# them) and the xDS ones shipped by @grpc/grpc-js-xds (only its .proto files and package.json).
(cd core/proto && find sigil -name '*.proto' -exec cp --parents -t "$app/" {} +)
mkdir -p "$root/opt/sigil/core/proto"
(cd core/proto && find sigil -name '*.proto' -exec cp --parents -t "$root/opt/sigil/core/proto/" {} +)
xds_pkg=node_modules/@grpc/grpc-js-xds
mkdir -p "$app/$xds_pkg"
cp "$xds_pkg/package.json" "$app/$xds_pkg/"
(cd "$xds_pkg" && find deps -name '*.proto' -exec cp --parents -t "$app/$xds_pkg/" {} +)

# protobufjs reads the well-known types' JSON descriptors at run time.
pb_pkg=node_modules/protobufjs
mkdir -p "$app/$pb_pkg"
cp "$pb_pkg/package.json" "$app/$pb_pkg/"
(cd "$pb_pkg" && find google -name '*.json' -exec cp --parents -t "$app/$pb_pkg/" {} +)

cat >"$root/etc/passwd" <<'PASSWD'
root:x:0:0:root:/:/usr/sbin/nologin
sigil:x:1337:1337:Sigil sidecar:/nonexistent:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
PASSWD
cat >"$root/etc/group" <<'GROUP'
root:x:0:
sigil:x:1337:
nogroup:x:65534:
GROUP
cp /etc/protocols "$root/etc/protocols"
[ -f /etc/services ] && cp /etc/services "$root/etc/services"

tarball=${output:-$work/rootfs.tar}
tar --numeric-owner --owner=0 --group=0 -C "$root" -cf "$tarball" .
podman import \
  --change 'ENTRYPOINT ["/usr/bin/node", "/opt/sigil/app/sigil.mjs"]' \
  --change 'ENV PATH=/usr/sbin:/usr/bin' \
  --change 'USER 1337:1337' \
  --change "LABEL org.opencontainers.image.version=${version}" \
  --change 'LABEL org.opencontainers.image.title=sigil' \
  "$tarball" "$tag" >/dev/null
size=$(podman image inspect --format '{{.Size}}' "$tag")
echo "built $tag ($((size / 1024 / 1024)) MiB, $(du -sh "$root" | cut -f1) root filesystem)"
