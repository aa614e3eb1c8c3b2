#!/usr/bin/env bash
# Builds the control-plane image sigil-controlplane:<version> offline, like build-image.sh: no base
# image is pulled. The root filesystem holds the node binary and the shared libraries it links, one
# bundle of cmd/sigil-controlplane, the protocol definitions it reads at run time and the web UI's
# files; it runs as uid 1000 (examples/kubernetes/10-controlplane.yaml), its state in /var/lib/sigil.
#
#   scripts/build-controlplane-image.sh [--tag sigil-controlplane:<version>] [--output <rootfs.tar>]
#
# Prints built|unchanged, the image reference and its size. Honours CONTAINERS_CONF /
# CONTAINERS_STORAGE_CONF.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/image-lib.sh

image_args "sigil-controlplane:${image_version}" "$@"
image_start
# The data directory: a volume in a deployment, owned by the image's user when there is none.
mkdir -p "$image_root/var/lib/sigil"
image_owned="1000:/var/lib/sigil"
put_node
bundle cmd/sigil-controlplane/main.ts sigil-controlplane dirname
put_protos
# The web UI: its own files next to the bundle (controlplane/ui/routes.ts), and the graph library.
cp -r controlplane/ui/static "$image_app/static"
cytoscape=node_modules/cytoscape
mkdir -p "$image_app/$cytoscape/dist"
cp "$cytoscape/package.json" "$image_app/$cytoscape/"
cp "$cytoscape/dist/cytoscape.min.js" "$image_app/$cytoscape/dist/"
# The etcd client (--etcd) reads its protocol from $image_app/../proto when it loads.
mkdir -p "$image_root/opt/sigil/proto"
cp node_modules/etcd3/proto/*.proto "$image_root/opt/sigil/proto/"
put_etc sigil:1000

image_import \
  'ENTRYPOINT ["/usr/bin/node", "/opt/sigil/app/sigil-controlplane.mjs"]' \
  'CMD ["--data-dir=/var/lib/sigil"]' \
  'ENV PATH=/usr/bin' \
  'USER 1000:1000' \
  'LABEL org.opencontainers.image.title=sigil-controlplane'
