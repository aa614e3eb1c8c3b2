# Shared by build-image.sh (the sidecar image) and build-controlplane-image.sh: a root filesystem
# assembled from this machine (no base image is pulled, so a build works offline), bundled with
# esbuild, and imported with `podman import` only when it differs from the image already tagged.
# Sourced, not run; the caller sets `set -euo pipefail` and cds to the repository.

image_version=$(node -p 'require("./package.json").version')

# Parses [--tag <ref>] [--output <rootfs.tar>] into image_tag / image_output (default tag: $1).
image_args() {
  image_tag="$1"
  image_output=""
  shift
  while [ $# -gt 0 ]; do
    case "$1" in
      --tag) image_tag="$2"; shift 2 ;;
      --output) image_output="$2"; shift 2 ;;
      *) echo "$(basename "$0"): unknown argument $1" >&2; exit 2 ;;
    esac
  done
}

# Makes the work directory and an empty root filesystem (image_work, image_root, image_app).
image_start() {
  for tool in node podman ldd tar sha256sum; do
    command -v "$tool" >/dev/null || { echo "$(basename "$0"): $tool is not installed (scripts/setup.sh installs it)" >&2; exit 1; }
  done
  image_work=$(mktemp -d)
  trap 'rm -rf "$image_work"' EXIT
  image_root="$image_work/rootfs"
  image_app="$image_root/opt/sigil/app"
  mkdir -p "$image_root"/{usr/bin,usr/sbin,etc,tmp,run} "$image_app"
  chmod 1777 "$image_root/tmp"
}

# Copies a file to the same path inside the root filesystem, following symlinks.
put() { mkdir -p "$image_root$(dirname "$1")"; cp -L "$1" "$image_root$1"; }
# The shared libraries (and the loader) the given binaries need, at the paths they look for them.
# One ldd for all of them: with a hundred xtables extensions, one call each is most of a build.
put_libs() {
  ldd "$@" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// && $1 !~ /:$/ {print $1}' | sort -u |
    while read -r lib; do put "$lib"; done
}

# The node binary this machine runs, as /usr/bin/node, with its libraries.
put_node() {
  local node_bin
  node_bin=$(readlink -f "$(command -v node)")
  cp "$node_bin" "$image_root/usr/bin/node"
  put_libs "$node_bin"
}

# Bundles one entry module to $image_app/<name>.mjs (scripts/bundle.sh; a third argument `dirname`
# is passed on).
bundle() {
  scripts/bundle.sh "$1" "$image_app/$2.mjs" "${3:-}"
}

# Protocol definitions read at run time: Sigil's own (next to the bundle, and where xds/ looks for
# them), the xDS ones shipped by @grpc/grpc-js-xds (only its .proto files and package.json), and the
# well-known types' JSON descriptors protobufjs reads.
put_protos() {
  (cd core/proto && find sigil -name '*.proto' -exec cp --parents -t "$image_app/" {} +)
  mkdir -p "$image_root/opt/sigil/core/proto"
  (cd core/proto && find sigil -name '*.proto' -exec cp --parents -t "$image_root/opt/sigil/core/proto/" {} +)
  # The Workload API's definition is read relative to the bundle (app/../../core/proto).
  mkdir -p "$image_root/opt/core/proto"
  (cd core/proto && find spiffe -name '*.proto' -exec cp --parents -t "$image_root/opt/core/proto/" {} +)
  local xds_pkg=node_modules/@grpc/grpc-js-xds pb_pkg=node_modules/protobufjs
  mkdir -p "$image_app/$xds_pkg" "$image_app/$pb_pkg"
  cp "$xds_pkg/package.json" "$image_app/$xds_pkg/"
  (cd "$xds_pkg" && find deps -name '*.proto' -exec cp --parents -t "$image_app/$xds_pkg/" {} +)
  cp "$pb_pkg/package.json" "$image_app/$pb_pkg/"
  (cd "$pb_pkg" && find google -name '*.json' -exec cp --parents -t "$image_app/$pb_pkg/" {} +)
  # Modules that read Sigil's version find package.json one level above the bundle.
  node -e 'const p = require("./package.json"); console.log(JSON.stringify({ name: p.name, version: p.version }))' \
    >"$image_root/opt/sigil/package.json"
}

# /etc: the accounts the image runs as ("name:uid" pairs besides root and nobody), protocols, services.
put_etc() {
  {
    echo "root:x:0:0:root:/:/usr/sbin/nologin"
    for account in "$@"; do echo "${account%%:*}:x:${account##*:}:${account##*:}:Sigil:/nonexistent:/usr/sbin/nologin"; done
    echo "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin"
  } >"$image_root/etc/passwd"
  {
    echo "root:x:0:"
    for account in "$@"; do echo "${account%%:*}:x:${account##*:}:"; done
    echo "nogroup:x:65534:"
  } >"$image_root/etc/group"
  cp /etc/protocols "$image_root/etc/protocols"
  if [ -f /etc/services ]; then cp /etc/services "$image_root/etc/services"; fi
}

# Imports the root filesystem as image_tag with the given `--change` lines, unless the image already
# tagged so was made from the same bytes and changes (label dev.sigil.rootfs): an unchanged build
# leaves the image alone, so suites can run this before every run. Prints the outcome and size.
image_import() {
  local tarball=${image_output:-$image_work/rootfs.tar} digest current size state
  # A reproducible archive: sorted names, one owner, fixed times, so equal inputs hash equal.
  # Directories the image's user must own (image_owned="uid:path ..."; podman refuses a path twice,
  # so they are left out of the first pass and appended with that owner).
  local owned excludes=()
  for owned in ${image_owned:-}; do excludes+=(--exclude=".${owned#*:}"); done
  tar --sort=name --mtime=@0 --numeric-owner --owner=0 --group=0 "${excludes[@]}" -C "$image_root" -cf "$tarball" .
  for owned in ${image_owned:-}; do
    tar --mtime=@0 --numeric-owner --owner="${owned%%:*}" --group="${owned%%:*}" --no-recursion \
      -C "$image_root" -rf "$tarball" ".${owned#*:}"
  done
  digest=$( { sha256sum <"$tarball"; printf '%s\n' "$@"; } | sha256sum | cut -d' ' -f1)
  current=$(podman image inspect --format '{{index .Labels "dev.sigil.rootfs"}}' "$image_tag" 2>/dev/null || true)
  if [ "$current" = "$digest" ]; then
    state="unchanged"
  else
    local changes=() change
    for change in "$@"; do changes+=(--change "$change"); done
    podman import "${changes[@]}" \
      --change "LABEL org.opencontainers.image.version=${image_version}" \
      --change "LABEL dev.sigil.rootfs=${digest}" \
      "$tarball" "$image_tag" >/dev/null
    state="built"
  fi
  size=$(podman image inspect --format '{{.Size}}' "$image_tag")
  echo "$state $image_tag ($((size / 1024 / 1024)) MiB, $(du -sh "$image_root" | cut -f1) root filesystem)"
}
