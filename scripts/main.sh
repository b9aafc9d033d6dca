#!/usr/bin/env bash
# veil's main job, for now: the crypto test-vector suite and the crypto bench.
# (The appliance issue turns this into the multi-host demo.)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
npm run --silent build

echo "== ESP vectors through veil's sealer and opener (every implementation)"
node dist/src/cli/veil.js vectors check vectors/esp/scapy_esp_in_udp_aes_gcm.json

echo "== Wycheproof and ESP vector suite"
npx vitest run test/crypto test/vxlan/esp-vectors.test.ts

echo "== bench/crypto"
node dist/bench/crypto.js
