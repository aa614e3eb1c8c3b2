#!/usr/bin/env bash
# Builds the sidecar image sigil:<version> offline: no base image is pulled. The root filesystem is
# assembled from this machine: the node binary and the shared libraries it links, iptables (nft
# back end) with its libraries and xtables extension directory, Sigil's native addon, one bundle of
# the in-pod commands (sigil init | sidecar | ready) and one of the fast path's worker thread, then
# imported with `podman import` (skipped when the image already holds the same bytes).
#
#   scripts/build-image.sh [--tag sigil:<version>] [--output <rootfs.tar>]
#
# Prints built|unchanged, the image reference and its size. Honours CONTAINERS_CONF /
# CONTAINERS_STORAGE_CONF.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/image-lib.sh

image_args "sigil:${image_version}" "$@"
addon=native/build/Release/sigil_native.node
[ -f "$addon" ] || { echo "build-image: $addon is missing: run npm ci first" >&2; exit 1; }
xtables_multi=$(command -v xtables-nft-multi || true)
[ -n "$xtables_multi" ] || { echo "build-image: xtables-nft-multi not found (Debian package iptables)" >&2; exit 1; }
xtables_dir=$(dirname "$(readlink -f "$(ldd "$xtables_multi" | awk '/libxtables/ {print $3}')")")/xtables
[ -d "$xtables_dir" ] || { echo "build-image: no xtables extension directory at $xtables_dir" >&2; exit 1; }

image_start
mkdir -p "$image_root"/var/run/sigil/{bundle,token} "$image_app/build/Release"
put_node

cp "$xtables_multi" "$image_root/usr/sbin/xtables-nft-multi"
put_libs "$xtables_multi"
for family in iptables ip6tables; do
  for suffix in "" -save -restore; do
    ln -s xtables-nft-multi "$image_root/usr/sbin/${family}${suffix}"
    ln -s xtables-nft-multi "$image_root/usr/sbin/${family}-nft${suffix}"
  done
done
# Without the extension directory every match (`-p tcp --dport`, `-m owner`) is an "unknown option".
mkdir -p "$image_root$xtables_dir"
cp "$xtables_dir"/*.so "$image_root$xtables_dir/"
put_libs "$xtables_dir"/*.so

cp "$addon" "$image_app/build/Release/"
put_libs "$addon"

bundle cmd/sigil-pod/main.ts sigil
# The fast path's worker threads load this file (sidecar/fastpath/workers.ts): a bundle has no
# TypeScript loader to run worker.ts with.
bundle sidecar/fastpath/worker.ts fastpath-worker
put_protos
put_etc sigil:1337

image_import \
  'ENTRYPOINT ["/usr/bin/node", "/opt/sigil/app/sigil.mjs"]' \
  'ENV PATH=/usr/sbin:/usr/bin' \
  'USER 1337:1337' \
  'LABEL org.opencontainers.image.title=sigil'
