#!/usr/bin/env bash
# A throwaway etcd on loopback for humans and CI: temp data dir, random-ish free ports, removed on exit.
#
#   scripts/etcd-test.sh                       one member in the foreground; prints ETCD_ENDPOINTS; Ctrl-C stops it
#   scripts/etcd-test.sh --members 3           a 3-member cluster (fault tests: kill one member's pid, printed below)
#   scripts/etcd-test.sh [--members N] -- CMD  runs CMD with ETCD_ENDPOINTS (and ETCDCTL_ENDPOINTS) exported, then stops etcd; exits with CMD's status
#
# Tests normally use test/system/support/etcd.ts, which does the same from TypeScript.
# Needs Debian's etcd-server (3.4): apt-get install etcd-server etcd-client
set -euo pipefail

members=1
cmd=()
while [ $# -gt 0 ]; do
  case "$1" in
    --members) members="$2"; shift 2 ;;
    --) shift; cmd=("$@"); break ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "etcd-test: unknown argument $1" >&2; exit 2 ;;
  esac
done
case "$members" in 1|3) ;; *) echo "etcd-test: --members must be 1 or 3" >&2; exit 2 ;; esac
ETCD_BIN=${ETCD_BIN:-/usr/bin/etcd}
[ -x "$ETCD_BIN" ] || { echo "etcd-test: $ETCD_BIN not found (apt-get install etcd-server etcd-client)" >&2; exit 1; }

dir=$(mktemp -d -t veil-etcd-XXXXXX)
pids=()
cleanup() {
  # The data is thrown away: no need for a graceful (and, for 3 members, slow) shutdown.
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Free loopback ports: ask the kernel for port 0 and read back what it chose.
free_port() { node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }

names=(); clients=(); peers=(); cluster=""
for i in $(seq 0 $((members - 1))); do
  names+=("m$i"); clients+=("http://127.0.0.1:$(free_port)"); peers+=("http://127.0.0.1:$(free_port)")
  cluster+="${cluster:+,}m$i=${peers[$i]}"
done
for i in $(seq 0 $((members - 1))); do
  "$ETCD_BIN" --name "${names[$i]}" --data-dir "$dir/${names[$i]}" \
    --listen-client-urls "${clients[$i]}" --advertise-client-urls "${clients[$i]}" \
    --listen-peer-urls "${peers[$i]}" --initial-advertise-peer-urls "${peers[$i]}" \
    --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token "veil-$$" \
    --logger zap --log-outputs "$dir/${names[$i]}.log" >/dev/null 2>&1 &
  pids+=("$!")
done

endpoints=$(IFS=,; echo "${clients[*]}")
# Healthy = every member answers /health with a committed proposal (so the cluster has quorum).
ok=0
for _ in $(seq 1 100); do
  if node -e '
    Promise.all(process.argv.slice(1).map((c) => fetch(c + "/health", { signal: AbortSignal.timeout(1000) }).then((r) => r.json())))
      .then((all) => process.exit(all.every((j) => j.health === "true") ? 0 : 1), () => process.exit(1));
  ' "${clients[@]}"; then ok=1; break; fi
  sleep 0.1
done
[ "$ok" = 1 ] || { echo "etcd-test: etcd did not become healthy; logs in $dir" >&2; tail -n 20 "$dir"/*.log >&2; exit 1; }

export ETCD_ENDPOINTS="$endpoints" ETCDCTL_ENDPOINTS="$endpoints"
echo "ETCD_ENDPOINTS=$endpoints"
for i in $(seq 0 $((members - 1))); do echo "member ${names[$i]} pid ${pids[$i]} client ${clients[$i]}"; done

if [ ${#cmd[@]} -gt 0 ]; then
  status=0; "${cmd[@]}" || status=$?
  exit "$status"
fi
wait "${pids[0]}"
