#!/bin/sh
# Run by `npm pack` (prepack): puts the native addon, built on this machine, in
# native/prebuilds/<platform>-<arch>/ so the packed Sigil installs without a C++ toolchain.
# The addon `npm ci` built is taken as it is unless a source is newer; else it is rebuilt.
set -eu
cd "$(dirname "$0")/.."
built=native/build/Release/sigil_native.node
if [ ! -f "$built" ] || [ -n "$(find native/src native/binding.gyp -newer "$built")" ]; then
  if [ -n "${npm_config_node_gyp:-}" ]; then
    node "$npm_config_node_gyp" rebuild --directory native
  else
    node-gyp rebuild --directory native
  fi
fi
target="native/prebuilds/$(node -p 'process.platform + "-" + process.arch')"
mkdir -p "$target"
cp "$built" "$target/sigil_native.node"
echo "prebuilt native addon: $target/sigil_native.node"
