#!/usr/bin/env bash
# Installs what veil and its tests need on a fresh Debian (bookworm) machine, then the npm
# dependencies. Idempotent: it installs only what is missing. Needs root (apt, namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests and benches use: iproute2 (ip, bridge), ping, nsenter (util-linux),
# ethtool and procps (checksum offload and IPv6 off in the vtep namespace), openssl (bench/crypto's reference), tcpdump and
# tshark (captures, independent ESP decryption), etcd-server and etcd-client (etcd 3.4 on loopback for the store tests),
# make, gcc, g++ and python3 for node-gyp (native/: built against Node's own headers and its bundled OpenSSL),
# nftables (nft: the vtep namespace's firewall that admits only the gateway's deliveries, docs/plumbing.md "No local injection").
# bind9-dnsutils (dig: the discovery tests ask the embedded DNS from inside containers);
# podman, runc and debootstrap: the appliance image (scripts/build-base-image.sh, scripts/image-test.sh;
# runc because crun refuses the cgroup v1/v2 hybrid layout some machines have).
# docker.io, docker-compose and busybox-static: the Docker plugin's tests run a dockerd per test host,
# with an image made from busybox (test/system/docker/docker-bed.ts), and Compose on two of them.
# containernetworking-plugins: podman's CNI backend (loopback) in the CNI tests, and bench/cni's reference
# (bridge, host-local); podman only recommends it.
PACKAGES=(iproute2 iputils-ping util-linux ethtool procps openssl tcpdump tshark etcd-server etcd-client make gcc g++ python3 nftables bind9-dnsutils podman runc debootstrap docker.io docker-compose busybox-static containernetworking-plugins)

if [ "$(id -u)" -ne 0 ]; then
  echo "setup: veil's tests build network namespaces and need root" >&2
  exit 1
fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  apt-get update -qq
  # No package starts its service here (docker.io would start a dockerd, with its firewall rules, on
  # this machine): the tests start what they need in their own namespaces.
  policy=/usr/sbin/policy-rc.d
  own_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && own_policy=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if [ "$own_policy" = 1 ]; then rm -f "$policy"; fi
fi

node -e 'const [a, b] = process.versions.node.split(".").map(Number); if (a < 20 || (a === 20 && b < 19)) { console.error(`setup: Node >= 20.19 required, found ${process.version}`); process.exit(1); }'

# npm ci when node_modules is missing or older than the lock file.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: npm ci"
  npm ci --no-audit --no-fund --loglevel=error
fi
