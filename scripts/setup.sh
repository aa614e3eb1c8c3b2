#!/usr/bin/env bash
# Installs everything Sigil's demo and test suite need on a fresh Debian machine, then the npm
# dependencies (which also builds the native addon). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(prometheus podman runc catatonit netavark aardvark-dns conmon iptables iproute2 openssl curl ca-certificates tshark netcat-openbsd iperf3 nginx haproxy chromium procps conntrack libnetfilter-queue-dev libmnl-dev pkg-config tcpdump nghttp2-client wrk clang libclang-rt-14-dev libssl-dev etcd-server etcd-client zsh fish)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

npm ci --no-audit --no-fund
