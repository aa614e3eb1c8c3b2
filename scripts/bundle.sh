#!/usr/bin/env bash
# Bundles one entry module, its packages inside, into one ES module: the form the images run and
# bench/compare measures. Whitespace is removed because V8 keeps the source text of every loaded
# module on the heap (5 MB of a sidecar's, measured in bench/compare/MEMORY.md); names stay, so
# stack traces still name their functions.
#
#   scripts/bundle.sh <entry.ts> <out.mjs> [dirname]
#
# The banner gives the bundle a `require` for the modules it loads at run time (the native addon,
# JSON descriptors). With `dirname`, the CommonJS modules in it also get a `__dirname`: the
# bundle's directory, so a file one reads relative to it must be laid out relative to the bundle
# (etcd3's protocol).
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: scripts/bundle.sh <entry.ts> <out.mjs> [dirname]" >&2; exit 2; }
repo=$(cd "$(dirname "$0")/.." && pwd)
banner="import { createRequire as __sigilRequire } from 'node:module'; const require = __sigilRequire(import.meta.url);"
if [ "${3:-}" = dirname ]; then
  banner="$banner import { dirname as __sigilDirname } from 'node:path'; import { fileURLToPath as __sigilPath } from 'node:url'; const __dirname = __sigilDirname(__sigilPath(import.meta.url));"
fi
"$repo/node_modules/.bin/esbuild" "$1" --bundle --platform=node --format=esm --target=node20 --minify-whitespace \
  --outfile="$2" --log-level=warning --banner:js="$banner"
