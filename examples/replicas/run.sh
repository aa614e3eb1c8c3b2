#!/usr/bin/env bash
# Three control-plane replicas over a three-member etcd on this machine (loopback), for trying
# failover by hand. Ctrl-C stops everything it started and removes its directory.
set -euo pipefail
cd "$(dirname "$0")/../.."
dir=$(mktemp -d /tmp/sigil-replicas.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT INT TERM

cluster=m0=http://127.0.0.1:23800,m1=http://127.0.0.1:23801,m2=http://127.0.0.1:23802
for i in 0 1 2; do
  etcd --name "m$i" --data-dir "$dir/etcd$i" \
    --listen-client-urls "http://127.0.0.1:2379$i" --advertise-client-urls "http://127.0.0.1:2379$i" \
    --listen-peer-urls "http://127.0.0.1:2380$i" --initial-advertise-peer-urls "http://127.0.0.1:2380$i" \
    --initial-cluster "$cluster" --initial-cluster-state new --log-level error &
  pids+=($!)
done

# One envelope key and one admin token for every replica, readable only by their owner.
(umask 077 && openssl rand -hex 32 >"$dir/envelope.key" && openssl rand -hex 32 >"$dir/http-token")
endpoints=http://127.0.0.1:23790,http://127.0.0.1:23791,http://127.0.0.1:23792
for i in 0 1 2; do
  npm run --silent controlplane -- --etcd "$endpoints" --envelope-key-file "$dir/envelope.key" \
    --http-token-file "$dir/http-token" --data-dir "$dir/r$i" --replica-id "r$i" \
    --grpc-host 127.0.0.1 --grpc-port "1501$i" --http-port "1508$i" &
  pids+=($!)
done

echo "replicas: grpc 127.0.0.1:15010,127.0.0.1:15011,127.0.0.1:15012  http :15080 :15081 :15082"
echo "try: SIGIL_TOKEN_FILE=$dir/http-token npm run sigil -- policy apply -f examples/policies/<file>.yaml --api http://127.0.0.1:15081,http://127.0.0.1:15080"
wait
