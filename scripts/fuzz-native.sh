#!/usr/bin/env bash
# Builds the native packet and token fuzzer (native/fuzz/) with libFuzzer, AddressSanitizer and
# UndefinedBehaviorSanitizer, then runs it for a bounded time from the committed corpus
# (test/fuzz/corpus/native-packet/, read only; new inputs go to a temporary directory). A crash
# leaves its input in native/build/fuzz/ and fails the run; add it to the corpus once fixed.
#
#   scripts/fuzz-native.sh [seconds]     (default 20; SIGIL_FUZZ_SEED picks the sequence)
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-20}"
out=native/build/fuzz
mkdir -p "$out"
command -v clang++ >/dev/null || { echo "fuzz-native: clang++ not found (scripts/setup.sh installs clang)" >&2; exit 2; }
sources=(native/fuzz/packet_fuzzer.cc native/src/tcp_packet.cc native/src/warm_handshake.cc)
# Rebuilt only when a source or header changed: the sanitizer build costs more than the run.
if [ ! -x "$out/packet_fuzzer" ] || [ -n "$(find "${sources[@]}" native/src/*.h -newer "$out/packet_fuzzer")" ]; then
  clang++ -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    -I native/src "${sources[@]}" -lcrypto -o "$out/packet_fuzzer"
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$out/packet_fuzzer" -seed="${SIGIL_FUZZ_SEED:-20261204}" -max_total_time="$seconds" -timeout=5 \
  -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$out/" "$work" test/fuzz/corpus/native-packet
