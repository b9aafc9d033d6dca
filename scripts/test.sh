#!/usr/bin/env bash
# The test command (README, CI): setup, build, lint, then both tiers (docs/testing.md "Tiers"):
# the unit tier in parallel, then the system tier one file at a time. Ends with
# "vitest: N passed, M failed" and exits non-zero when anything failed or no test ran.
# Arguments go to vitest (e.g. --project unit, or a file).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
npm run --silent build

status=0
npm run --silent lint || status=1

report=$(mktemp -t veil-vitest-XXXXXX.json)
trap 'rm -f "$report"' EXIT
npx vitest run --reporter=default --reporter=json --outputFile.json="$report" "$@" || status=1
node -e '
  const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
  const skipped = r.numPendingTests + r.numTodoTests;
  console.log(`vitest: ${r.numPassedTests} passed, ${r.numFailedTests} failed` + (skipped ? `, ${skipped} skipped` : ""));
  if (r.numTotalTests === 0) { console.error("vitest: no test ran"); process.exit(1); }
' "$report" || status=1
exit "$status"
