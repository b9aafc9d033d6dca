#!/usr/bin/env bash
# Builds the native data path (node-gyp, npm's own) when it is missing or older than its sources.
set -euo pipefail
cd "$(dirname "$0")/../native"
addon=build/Release/veil_native.node
if [ -f "$addon" ] && [ -z "$(find . -maxdepth 1 \( -name '*.c' -o -name '*.h' -o -name binding.gyp \) -newer "$addon")" ]; then
  exit 0
fi
npm run --silent --prefix .. build:native
