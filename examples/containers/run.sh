#!/usr/bin/env bash
# Sigil on podman pods, no cluster (README.md here): the pods of pods.yaml injected with
# `sigil inject`, started with `podman kube play` on a network of their own, under policy.yaml.
#
#   run.sh up                    build the image (scripts/build-image.sh), then start
#   run.sh start                 network, control plane, policy, join tokens, inject, kube play
#   run.sh check                 web and rogue call api; prints each answer
#   run.sh call <pod> <path>     one GET from <pod>'s application container to api:9090<path>
#   run.sh sigil <args...>       any sigil command against the example's control plane, e.g.
#                                `run.sh sigil workload label rogue tier=trusted` (`tier-` removes it)
#   run.sh down                  remove everything start made (pods, control plane, network, files)
#
# Run as root. Environment (defaults in brackets):
#   SIGIL_EXAMPLE_DIR            state: control plane data, join tokens, injected YAML [/tmp/sigil-containers]
#   SIGIL_EXAMPLE_SUBNET         first three octets of the network's /24 [198.18.120]
#   SIGIL_EXAMPLE_NETWORK        use this existing podman network (with its SUBNET) instead of making one
#   SIGIL_EXAMPLE_CONTROLPLANE   data directory of a running control plane to use instead of starting one
#   SIGIL_EXAMPLE_GRPC_PORT, SIGIL_EXAMPLE_HTTP_PORT  the control plane's ports [15010, 15080]
set -Eeuo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
dir=${SIGIL_EXAMPLE_DIR:-/tmp/sigil-containers}
subnet=${SIGIL_EXAMPLE_SUBNET:-198.18.120}
network=${SIGIL_EXAMPLE_NETWORK:-sigil-containers}
cp_data=${SIGIL_EXAMPLE_CONTROLPLANE:-$dir/controlplane}
grpc_port=${SIGIL_EXAMPLE_GRPC_PORT:-15010}
http_port=${SIGIL_EXAMPLE_HTTP_PORT:-15080}
host_dir="$dir/host"
policy_name=sigil-containers-example.yaml
# Only for the podman commands of this script: the machine's own configuration stays untouched.
export CONTAINERS_CONF="$here/containers.conf"
export SIGIL_API="http://127.0.0.1:$http_port" SIGIL_TOKEN_FILE="$cp_data/http-token"
cd "$repo"
image="sigil:$(node -p 'require("./package.json").version')"

die() { echo "run.sh: $*" >&2; exit 1; }
sigil() { node "$repo/bin/sigil.mjs" "$@"; }

# "<name> <label>=<value>,..." for each pod of pods.yaml, in file order.
pods() {
  node --input-type=module -e '
    import { readFileSync } from "node:fs";
    import { parseAllDocuments } from "yaml";
    for (const doc of parseAllDocuments(readFileSync(process.argv[1], "utf8"))) {
      const { name, labels = {} } = doc.toJS().metadata;
      console.log(name, Object.entries(labels).map(([k, v]) => `${k}=${v}`).join(","));
    }' "$here/pods.yaml"
}

# The address a pod was started with (start writes them, one "<name> <ip>" a line).
address() {
  local ip
  ip=$(awk -v n="$1" '$1 == n {print $2}' "$dir/addresses" 2>/dev/null) || true
  [ -n "$ip" ] || die "no pod $1 started here (run.sh start)"
  echo "$ip"
}

start_network() {
  if [ -n "${SIGIL_EXAMPLE_NETWORK:-}" ]; then
    podman network exists "$network" || die "network $network does not exist"
    return
  fi
  podman network exists "$network" && die "network $network exists already: run.sh down first"
  podman network create --subnet "$subnet.0/24" --gateway "$subnet.1" "$network" >/dev/null
  touch "$dir/network-made"
}

start_controlplane() {
  if [ -n "${SIGIL_EXAMPLE_CONTROLPLANE:-}" ]; then
    [ -f "$cp_data/bundle.pem" ] || die "no control plane data in $cp_data (no bundle.pem)"
    return
  fi
  # Its own policy directory, empty: the policy arrives through the API like any applied change.
  mkdir -p "$dir/policies"
  nohup node --import tsx cmd/sigil-controlplane/main.ts --data-dir "$cp_data" \
    --policy-dir "$dir/policies" --grpc-port "$grpc_port" --http-port "$http_port" \
    >"$dir/controlplane.log" 2>&1 </dev/null &
  echo $! >"$dir/controlplane.pid"
  for _ in $(seq 120); do
    grep -q "sigil control plane ready" "$dir/controlplane.log" && return
    kill -0 "$(cat "$dir/controlplane.pid")" 2>/dev/null || break
    sleep 0.5
  done
  tail -20 "$dir/controlplane.log" >&2
  die "the control plane did not start (log: $dir/controlplane.log)"
}

# Each pod's join token carries the labels pods.yaml gives it: on podman the operator, not the
# pod, decides what its identity says.
write_host_dir() {
  mkdir -p "$host_dir/bundle"
  cp "$cp_data/bundle.pem" "$host_dir/bundle/"
  local name labels
  while read -r name labels; do
    mkdir -p "$host_dir/tokens/$name"
    sigil token create --name "$name" --labels "$labels" --ttl 15m >"$host_dir/tokens/$name/token"
    # Readable by the sidecar's uid alone.
    chown -R 1337:1337 "$host_dir/tokens/$name"
    chmod 0400 "$host_dir/tokens/$name/token"
  done < <(pods)
}

wait_ready() {
  local name state
  for name in "$@"; do
    for _ in $(seq 240); do
      podman logs "$name-sigil-sidecar" 2>&1 | grep -q "sigil sidecar ready" && continue 2
      state=$(podman inspect --format '{{.State.Status}}' "$name-sigil-sidecar" 2>/dev/null || true)
      [ "$state" = exited ] && break
      sleep 0.5
    done
    podman logs "$name-sigil-sidecar" 2>&1 | tail -20 >&2
    die "$name's sidecar is not ready"
  done
}

cmd_start() {
  [ "$(id -u)" = 0 ] || die "run as root: podman networks and capture inside the pods need it"
  podman image exists "$image" || die "no image $image: run.sh up (or scripts/build-image.sh) builds it"
  [ -e "$dir/pods.yaml" ] && die "already started ($dir): run.sh down first"
  trap 'echo "run.sh: start failed; run.sh down removes what it made" >&2' ERR
  mkdir -p "$dir"
  chmod 0755 "$dir"
  start_network
  start_controlplane
  sigil policy apply -f - --name "$policy_name" <"$here/policy.yaml"
  write_host_dir
  # Pods reach the control plane at the network's gateway: the host.
  sigil inject --runtime podman --host-dir "$host_dir" --control-plane "$subnet.1:$grpc_port" \
    --image "$image" --image-pull-policy Never -f "$here/pods.yaml" >"$dir/pods.yaml"
  local name ips=() names=() n=1
  : >"$dir/addresses"
  while read -r name _; do
    names+=("$name")
    ips+=(--ip "$subnet.$((n * 10))")
    echo "$name $subnet.$((n * 10))" >>"$dir/addresses"
    n=$((n + 1))
  done < <(pods)
  podman kube play --network "$network" "${ips[@]}" "$dir/pods.yaml" >/dev/null
  wait_ready "${names[@]}"
  trap - ERR
  cat "$dir/addresses"
}

cmd_call() {
  [ $# = 2 ] || die "usage: run.sh call <pod> <path>"
  local api
  api=$(address api)
  podman exec "$1-app" /usr/bin/node -e \
    'fetch(process.argv[1]).then(async (r) => console.log(r.status, await r.text()), (e) => console.log("ERR", e.cause?.code ?? e.message))' \
    "http://$api:9090$2"
}

# The three calls at once (each is a podman exec), printed in order.
cmd_check() {
  local pids=() i
  cmd_call web /data >"$dir/check-1" &
  pids+=($!)
  cmd_call web /admin >"$dir/check-2" &
  pids+=($!)
  cmd_call rogue /data >"$dir/check-3" &
  pids+=($!)
  for i in "${pids[@]}"; do wait "$i"; done
  echo "web   -> api GET /data:  $(cat "$dir/check-1")"
  echo "web   -> api GET /admin: $(cat "$dir/check-2")"
  echo "rogue -> api GET /data:  $(cat "$dir/check-3")"
}

cmd_down() {
  if [ -f "$dir/pods.yaml" ]; then podman kube down "$dir/pods.yaml" >/dev/null || true; fi
  if [ -f "$dir/controlplane.pid" ]; then
    local pid
    pid=$(cat "$dir/controlplane.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -KILL "$pid" 2>/dev/null || true
  elif [ -f "$dir/pods.yaml" ]; then
    # A control plane this script did not start keeps running; the example's policy leaves it.
    sigil policy delete "$policy_name" >/dev/null || true
  fi
  if [ -f "$dir/network-made" ]; then podman network rm -f "$network" >/dev/null || true; fi
  rm -rf "$dir"
}

case "${1:-}" in
  up) "$repo/scripts/build-image.sh"; cmd_start ;;
  start) cmd_start ;;
  check) cmd_check ;;
  call) shift; cmd_call "$@" ;;
  sigil) shift; sigil "$@" ;;
  down) cmd_down ;;
  *) sed -n '2,18p' "$here/run.sh" >&2; exit 2 ;;
esac
