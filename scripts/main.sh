#!/usr/bin/env bash
# npm start: every crypto primitive against its published vectors on every implementation, then
# bench/crypto. (npm run demo runs a three-host cluster end to end.)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
npm run --silent build

echo "== ESP vectors through veil's sealer and opener (every implementation)"
node dist/src/cli/veil.js vectors check vectors/esp/scapy_esp_in_udp_aes_gcm.json

echo "== Wycheproof and ESP vector suite"
npx vitest run test/crypto test/vxlan/wire/esp-vectors.test.ts

echo "== bench/crypto"
node dist/bench/crypto.js
