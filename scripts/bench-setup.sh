#!/usr/bin/env bash
# Installs what bench/overlay compares veil against: iperf3, OpenVPN, and the current wireguard-go
# (bookworm-backports: bookworm's own 2022 build predates its batching and offload work); and perf
# (linux-perf), which bench/profile samples with.
set -euo pipefail
bash "$(dirname "$0")/setup.sh"
if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
  cat > /etc/apt/sources.list.d/backports.sources <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends iperf3 openvpn wireguard-tools linux-perf >/dev/null
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends -t bookworm-backports wireguard-go >/dev/null
