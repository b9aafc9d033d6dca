#!/usr/bin/env bash
# The appliance image, end to end (CI runs this): builds the local Debian base when it is missing
# (scripts/build-base-image.sh), builds the Containerfile on it, starts the image the way the README's
# run line does, waits until its own HEALTHCHECK passes, uses the CLI inside it, stops it and checks
# that it removed what it plumbed and kept its identity key and store, and restarts it on them.
#
#   scripts/image-test.sh [--base IMAGE] [--tag IMAGE]
#
# The container runs in a namespace this script makes (not the machine's own network), with a vtep
# namespace name of its own, so that nothing on the machine is touched. The container, the namespaces
# and the data dir are removed on exit, failure or Ctrl-C; the images stay (a rebuild reuses them).
set -euo pipefail
cd "$(dirname "$0")/.."

BASE=${VEIL_BASE_IMAGE:-localhost/veil-base:bookworm}
TAG=localhost/veil:test
while [ $# -gt 0 ]; do
  case "$1" in
    --base) BASE="$2"; shift 2 ;;
    --tag) TAG="$2"; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "image-test: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" -eq 0 ] || { echo "image-test: needs root (namespaces, podman)" >&2; exit 1; }

T0=$(date +%s)
say() { echo "image-test: [$(( $(date +%s) - T0 ))s] $*"; }
fail() { echo "image-test: FAILED: $*" >&2; exit 1; }

bash scripts/setup.sh >/dev/null

# ── engine options for this machine ─────────────────────────────────────────────────────────────
podman_opts=()
# crun refuses a cgroup v1/v2 hybrid layout ("drop all controllers from cgroupv2"); runc takes it.
if [ -d /sys/fs/cgroup/unified ] && command -v runc >/dev/null; then podman_opts+=(--runtime runc); fi
# Without CAP_SYS_RESOURCE the engine cannot raise rlimits to its defaults: ask for what we have.
nofile=$(ulimit -Hn); [ "$nofile" = unlimited ] || [ "$nofile" -gt 65536 ] && nofile=65536
limits=(--ulimit "nofile=$nofile:$nofile" --ulimit nproc=4096:4096)
# The HEALTHCHECK still runs on demand (podman healthcheck run); only its systemd timer needs systemd.
timer=()
[ -S /run/systemd/private ] || timer=(--health-interval disable)
pm() { podman "${podman_opts[@]}" "$@"; }

# ── build ───────────────────────────────────────────────────────────────────────────────────────
if [ "$BASE" = localhost/veil-base:bookworm ]; then
  bash scripts/build-base-image.sh --tag "$BASE"
  say "base image $BASE ready"
fi
build_extra=()
# An intercepting proxy's CA between this machine and the npm registry (npm's cafile setting), if any.
cafile=$(npm config get cafile 2>/dev/null || true)
if [ -n "$cafile" ] && [ "$cafile" != null ] && [ "$cafile" != undefined ] && [ -f "$cafile" ]; then
  build_extra+=(-v "$cafile:/run/npm-ca.pem:ro" --build-arg NPM_CAFILE=/run/npm-ca.pem)
fi
say "building $TAG from Containerfile on $BASE"
build_log=$(mktemp -t veil-image-build-XXXXXX.log)
if ! pm build --format docker --network host "${limits[@]}" "${build_extra[@]}" \
    --build-arg "BASE=$BASE" -t "$TAG" -f Containerfile . >"$build_log" 2>&1; then
  tail -n 40 "$build_log" >&2; rm -f "$build_log"; fail "podman build"
fi
rm -f "$build_log"
say "built $TAG ($(pm image inspect --format '{{.Size}}' "$TAG" | awk '{printf "%.0f MB", $1/1e6}'))"

# ── run it the README's way, in a namespace of our own ───────────────────────────────────────────
P=veilimg$(head -c 256 /dev/urandom | tr -dc 'a-z0-9' | head -c 4)
NS=$P
VTEP=$P-vtep
CTR=$P
DATA=$(mktemp -d -t veil-image-data-XXXXXX)
SOCKDIR=$(mktemp -d -t veil-image-run-XXXXXX)
CNIBIN=$(mktemp -d -t veil-image-cni-XXXXXX)
cleanup() {
  local status=$?
  trap - EXIT INT TERM HUP
  pm rm -f -t 5 "$CTR" >/dev/null 2>&1 || true
  for ns in "$P-c" "$VTEP" "$NS"; do
    if [ -e "/run/netns/$ns" ]; then
      for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
      ip netns del "$ns" 2>/dev/null || true
    fi
  done
  rm -rf "$DATA" "$SOCKDIR" "$CNIBIN"
  if [ $status -eq 0 ]; then say "OK: built, healthy, used, stopped clean, restarted (total $(( $(date +%s) - T0 ))s)"; fi
  exit $status
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

ip netns add "$NS"
ip -n "$NS" link set lo up
ip -n "$NS" link add eth0 type veth peer name eth1
ip -n "$NS" addr add 198.18.250.1/24 dev eth0
ip -n "$NS" link set eth0 up
ip -n "$NS" link set eth1 up

run_container() {
  # The README's run line, with --network host replaced by this test's namespace.
  pm run -d --name "$CTR" "${limits[@]}" "${timer[@]}" \
    --network "ns:/run/netns/$NS" \
    --cap-add NET_ADMIN --cap-add SYS_ADMIN --security-opt unmask=/proc/sys --device /dev/net/tun \
    -v /run/netns:/run/netns:rshared -v "$DATA:/var/lib/veil" -v "$SOCKDIR:/run/veil" \
    -e VEIL_CLUSTER_ADVERTISE=eth0 -e VEIL_VTEP_NETNS="$VTEP" -e VEIL_HOST_ID=imagetest \
    "$TAG" >/dev/null 2>&1 || fail "podman run"
}
wait_healthy() {
  local start=$SECONDS
  for _ in $(seq 1 90); do
    [ "$(pm inspect --format '{{.State.Running}}' "$CTR")" = true ] || { pm logs "$CTR" 2>&1 | tail -n 20 >&2; fail "the container exited"; }
    if pm healthcheck run "$CTR" >/dev/null 2>&1; then
      say "healthy after $(( SECONDS - start ))s ($(pm inspect --format '{{.State.Health.Status}}' "$CTR" 2>/dev/null))"
      return 0
    fi
    sleep 1
  done
  pm logs "$CTR" 2>&1 | tail -n 20 >&2
  fail "not healthy after 90s"
}
# (Output is captured before grep -q reads it: with pipefail, grep -q leaving early fails the pipe.)
logs_have() { local out; out=$(pm logs "$CTR" 2>&1); grep -q -- "$1" <<<"$out"; }
inside() { pm exec "$CTR" "$@"; }

run_container
say "started $CTR (embedded etcd, vtep namespace $VTEP)"
wait_healthy

node_version=$(inside node --version)
want=$(sed -n 's/^ARG NODE_VERSION=//p' Containerfile)
[ "$node_version" = "v$want" ] || fail "node $node_version in the image, Containerfile pins $want"
logs_have '"dataPath":"native"' || fail "the gateway did not pick the native data path"
say "Node $node_version; native data path loaded"
out=$(inside veil vectors check /opt/veil/vectors/esp/scapy_esp_in_udp_aes_gcm.json) || fail "ESP vectors in the image: $out"
grep -q ' 0 failed' <<<"$out" || fail "ESP vectors in the image: $out"
say "ESP vectors pass in the image (node:crypto, noble, native)"
out=$(inside veil host ls)
grep -q '^imagetest ' <<<"$out" || fail "veil host ls does not list the host: $out"
inside veil network create --opt encrypted --subnet 10.250.0.0/24 imagetest >/dev/null || fail "network create"
vni=$(inside veil network inspect imagetest | node -e 'process.stdout.write(String(JSON.parse(require("fs").readFileSync(0,"utf8"))[0].VNI))')
for _ in $(seq 1 50); do ip -n "$VTEP" link show "tp$vni" >/dev/null 2>&1 && break; sleep 0.1; done
ip -n "$VTEP" link show "tp$vni" >/dev/null 2>&1 || fail "TAP port tp$vni not in the vtep namespace seen from the host (/run/netns sharing, /dev/net/tun)"
! ip -n "$VTEP" link show "vx$vni" >/dev/null 2>&1 || fail "vx$vni beside the TAP port: every frame would go twice"
logs_have 'no TAP port for the network' && fail "the gateway fell back to the kernel VXLAN device"
say "CLI in the container made network imagetest (VNI $vni); its TAP port shows in $VTEP on the host"

# veil-cni from the image onto the host (docs/cni.md "Installing"), then ADD and DEL through it, as a runtime runs it.
out=$(pm run --rm "${limits[@]}" "${timer[@]}" --network none -v "$CNIBIN:/host" "$TAG" cni install /host 2>&1) ||
  fail "veil cni install from the image: $out"
ip netns add "$P-c"
conf="{\"cniVersion\":\"1.0.0\",\"name\":\"imagetest\",\"type\":\"veil-cni\",\"api\":\"unix:$SOCKDIR/veil.sock\"}"
cni() { env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin CNI_COMMAND="$1" CNI_CONTAINERID=imagetest1 CNI_NETNS="/run/netns/$P-c" \
  CNI_IFNAME=eth0 CNI_PATH="$CNIBIN" "$CNIBIN/veil-cni" <<<"$conf"; }
out=$(cni ADD) || fail "veil-cni ADD: $out"
grep -q '"address":"10.250.0.[0-9]*/24"' <<<"$out" || fail "veil-cni ADD printed no address: $out"
ip -n "$P-c" -4 addr show dev eth0 | grep -q ' 10\.250\.0\.' || fail "no eth0 with the address in the container namespace"
out=$(cni DEL) || fail "veil-cni DEL: $out"
! ip -n "$P-c" link show dev eth0 >/dev/null 2>&1 || fail "eth0 left after DEL"
say "veil-cni installed from the image onto the host; ADD and DEL through the appliance's API"

# A clean stop removes what it plumbed and keeps what it must keep.
pm stop -t 20 "$CTR" >/dev/null 2>&1
code=$(pm inspect --format '{{.State.ExitCode}}' "$CTR")
[ "$code" = 0 ] || fail "exit code $code after SIGTERM"
logs_have '"unplumbed":true' || fail "no unplumb on stop"
logs_have 'embedded etcd stopped' || fail "embedded etcd not stopped"
[ ! -e "/run/netns/$VTEP" ] || fail "$VTEP left behind"
[ "$(stat -c %a "$DATA/identity.key")" = 600 ] || fail "identity key missing or not 0600"
say "stopped: exit 0, vtep namespace removed, embedded etcd stopped, identity key kept (0600)"

pm rm "$CTR" >/dev/null 2>&1
run_container
wait_healthy
logs_have '"created":false' || fail "the restarted gateway made a new identity"
out=$(inside veil network ls)
grep -q ' imagetest ' <<<"$out" || fail "the embedded store lost the network: $out"
say "restarted on the same volume: same identity, network imagetest still there"
