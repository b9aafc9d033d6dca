#!/usr/bin/env bash
# Builds the native data path (node-gyp, npm's own) when it is missing or older than its sources.
set -euo pipefail
cd "$(dirname "$0")/../native"
# Both targets of binding.gyp: the addon, and its fault-injection twin for the tests.
fresh=1
for addon in build/Release/veil_native.node build/Release/veil_native_faults.node; do
  if [ ! -f "$addon" ] || [ -n "$(find . -maxdepth 1 \( -name '*.c' -o -name '*.h' -o -name binding.gyp \) -newer "$addon")" ]; then
    fresh=0
  fi
done
[ "$fresh" = 1 ] && exit 0
npm run --silent --prefix .. build:native
