#!/usr/bin/env bash
# npm run demo: veil on one machine, end to end, in a couple of minutes.
#
#   etcd and three hosts as network namespaces on a private underlay (198.18.0.0/24), a `veil gateway`
#   in each host, an encrypted and a plain overlay network made with the `veil` CLI, containers
#   (namespaces) attached on every host, pings across hosts, a key rotation forced while traffic
#   flows, and tshark's view of a host's underlay: ESP only on the encrypted network, VXLAN with the
#   ICMP inside in clear on the plain one. Then everything is torn down and checked gone.
#
#   scripts/demo.sh [--no-build]      (root: it makes namespaces; scripts/setup.sh installs what it uses)
#
# Every name it makes starts with a fresh prefix (vdm<4 random>-); on exit, failure or Ctrl-C it stops
# what it started and deletes exactly those namespaces. A run killed outright (SIGKILL) is swept by the
# next run: /run/veil-demo/<prefix> records the owner's pid.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
CLI="$ROOT/dist/src/cli/veil.js"
MARKERS=/run/veil-demo
UNDERLAY_NET=198.18.0
ETCD_IP=$UNDERLAY_NET.250
HOSTS=(1 2 3)

build=1
for a in "$@"; do
  case "$a" in
    --no-build) build=0 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "demo: unknown argument $a" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" -eq 0 ] || { echo "demo: needs root (network namespaces)" >&2; exit 1; }

T0=$(date +%s%N)
say() { printf '[%5.1fs] %s\n' "$(( ($(date +%s%N) - T0) / 1000000 ))e-3" "$*"; }
section() { printf '\n== %s\n' "$*"; }
indent() { sed 's/^/      /'; }
die() { say "FAILED: $*"; exit 1; }

# Namespaces whose name starts with $1 (ip netns list also complains about other people's broken ones).
netns_with() { ip netns list 2>/dev/null | awk '{print $1}' | grep "^$1" || true; }

# ── leftovers of a run that was killed outright ─────────────────────────────────────────────────
mkdir -p "$MARKERS"
for m in "$MARKERS"/vdm*; do
  [ -e "$m" ] || continue
  owner=$(cat "$m" 2>/dev/null || true)
  if [ -n "$owner" ] && kill -0 "$owner" 2>/dev/null; then continue; fi
  stale=$(basename "$m")
  for ns in $(netns_with "$stale"); do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
  done
  rm -rf "$m" "/tmp/veil-demo-$stale"
  echo "demo: swept the namespaces of an earlier run that was killed ($stale)"
done

if [ "$build" = 1 ]; then
  bash scripts/setup.sh
  npm run --silent build
  say "built (scripts/setup.sh, npm run build)"
  T0=$(date +%s%N)
fi
[ -f "$CLI" ] || { echo "demo: $CLI missing (npm run build)" >&2; exit 1; }

# vdm + 4 + "-": unlike the test beds' v<5>- prefixes, and not in use.
while :; do
  P=vdm$(head -c 256 /dev/urandom | tr -dc 'a-z0-9' | head -c 4)-
  [ -z "$(netns_with "$P")" ] && [ ! -e "$MARKERS/$P" ] && break
done
DIR=/tmp/veil-demo-$P
mkdir -p "$DIR"
echo $$ > "$MARKERS/$P"
ns_before=$(netns_with "$P" | wc -l)

GW_PIDS=()
ETCD_PID=
BG_PIDS=()
cleanup() {
  local status=$?
  trap - EXIT INT TERM HUP
  section "teardown"
  for pid in "${BG_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  # Gateways first, gracefully: each removes what it plumbed (its vtep namespace, links, FDB).
  for i in "${!GW_PIDS[@]}"; do kill -TERM "${GW_PIDS[$i]}" 2>/dev/null || true; done
  for i in "${!GW_PIDS[@]}"; do
    local pid=${GW_PIDS[$i]} n=0
    while kill -0 "$pid" 2>/dev/null && [ $n -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
    kill -KILL "$pid" 2>/dev/null || true
    if grep -q '"unplumbed":true' "$DIR/h$((i + 1)).log" 2>/dev/null; then say "h$((i + 1)): gateway stopped, unplumbed"; fi
  done
  if [ -n "$ETCD_PID" ]; then kill -TERM "$ETCD_PID" 2>/dev/null || true; wait "$ETCD_PID" 2>/dev/null || true; say "etcd stopped"; fi
  # Then every namespace this run made (and anything still running inside one).
  for ns in $(netns_with "$P"); do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
  done
  if [ $status -ne 0 ] && [ -d "$DIR" ]; then
    echo "--- last gateway log lines (h1) ---"; tail -n 5 "$DIR/h1.log" 2>/dev/null | cut -c1-300 || true
  fi
  rm -rf "$DIR" "$MARKERS/$P"
  local left
  left=$(netns_with "$P" | wc -l)
  local procs
  procs=$(pgrep -f -- "$DIR" | wc -l || true)
  say "left behind: $left namespaces with prefix $P (before: $ns_before), $procs processes, data dir removed"
  if [ "$left" != "$ns_before" ] || [ "$procs" != 0 ]; then status=1; echo "demo: cleanup incomplete" >&2; fi
  [ $status -eq 0 ] && echo "demo: done" || echo "demo: failed (exit $status)"
  exit $status
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# veil <host> ARGS: the real CLI against that host's API socket, echoed like a shell session.
veil() {
  local h=$1; shift
  echo "    h$h\$ veil $*"
  node "$CLI" --api "unix:$DIR/h$h.sock" "$@" 2>&1 | indent
  return "${PIPESTATUS[0]}"
}
# Quiet variant for values the script needs.
veil_q() { local h=$1; shift; node "$CLI" --api "unix:$DIR/h$h.sock" "$@"; }
# Foreground commands in a namespace. Background ones call `ip netns exec` directly, so that $! is
# the process itself (ip execs it in place); etcd and the gateways also run under setsid, so that a
# Ctrl-C reaches this script alone and the teardown stops them in order (gateways, then etcd).
nsx() { local ns=$1; shift; ip netns exec "$P$ns" "$@"; }

section "veil demo: etcd + 3 hosts on one machine (namespaces ${P}*)"

# ── underlay: a bridge in a hub namespace; hosts and etcd hang off it by veth ───────────────────
ip netns add "${P}ul"
ip -n "${P}ul" link set lo up
ip -n "${P}ul" link add ul0 type bridge
ip -n "${P}ul" link set ul0 up
attach() { # attach <ns-label> <port-name> <address>
  ip netns add "$P$1"
  ip -n "$P$1" link set lo up
  ip -n "${P}ul" link add "$2" type veth peer name eth0 netns "$P$1"
  ip -n "${P}ul" link set "$2" master ul0 up
  ip -n "$P$1" addr add "$3/24" dev eth0
  ip -n "$P$1" link set eth0 up
}
attach etcd etcd0 "$ETCD_IP"
for i in "${HOSTS[@]}"; do attach "h$i" "h$i" "$UNDERLAY_NET.$i"; done
say "underlay $UNDERLAY_NET.0/24: hosts h1-h3 at .1-.3, etcd at .250"

# ── etcd ───────────────────────────────────────────────────────────────────────────────────────
setsid ip netns exec "${P}etcd" etcd --name demo --data-dir "$DIR/etcd" \
  --listen-client-urls "http://$ETCD_IP:2379" --advertise-client-urls "http://$ETCD_IP:2379" \
  --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
  --initial-cluster demo=http://127.0.0.1:2380 --logger zap --log-outputs "$DIR/etcd.log" >/dev/null 2>&1 &
ETCD_PID=$!
for _ in $(seq 1 100); do
  nsx etcd etcdctl --endpoints "http://$ETCD_IP:2379" --dial-timeout=1s endpoint health >/dev/null 2>&1 && break
  kill -0 "$ETCD_PID" 2>/dev/null || die "etcd exited: $(tail -n 3 "$DIR/etcd.log")"
  sleep 0.1
done
nsx etcd etcdctl --endpoints "http://$ETCD_IP:2379" endpoint health >/dev/null 2>&1 || die "etcd not healthy"
say "etcd $(etcd --version | awk '/etcd Version/ {print $3}') up at $ETCD_IP:2379"

# ── one gateway per host ─────────────────────────────────────────────────────────────────────────
for i in "${HOSTS[@]}"; do
  args=(gateway --cluster-store "etcd://$ETCD_IP:2379" --cluster-advertise eth0 --host-id "h$i"
        --data-dir "$DIR/h$i" --api-socket "$DIR/h$i.sock" --vtep-netns "${P}v$i" --link-net "169.254.$i.0"
        --lease-ttl 5 --key-grace 3s)
  [ "$i" = 1 ] && echo "    h1# veil ${args[*]}"
  setsid ip netns exec "${P}h$i" node "$CLI" "${args[@]}" >"$DIR/h$i.log" 2>&1 &
  GW_PIDS+=("$!")
done
for i in "${HOSTS[@]}"; do
  for _ in $(seq 1 300); do
    grep -q '"msg":"gateway ready"' "$DIR/h$i.log" && break
    kill -0 "${GW_PIDS[$((i - 1))]}" 2>/dev/null || die "h$i: gateway exited: $(tail -n 3 "$DIR/h$i.log" | cut -c1-300)"
    sleep 0.1
  done
  grep -q '"msg":"gateway ready"' "$DIR/h$i.log" || die "h$i: gateway not ready after 30s"
  dp=$(grep -o '"dataPath":"[a-z]*"' "$DIR/h$i.log" | head -1 | cut -d'"' -f4)
  say "h$i: gateway ready ($dp data path; vtep namespace ${P}v$i; API $DIR/h$i.sock)"
done
veil 1 host ls

# ── networks and containers ──────────────────────────────────────────────────────────────────────
section "networks: one encrypted, one plain (made on h1; every host follows through etcd)"
veil 1 network create --opt encrypted --subnet 10.10.1.0/24 secure
veil 1 network create --subnet 10.10.2.0/24 plain
veil 2 network ls

declare -A IP
container() { # container <name> <host> <network>
  ip netns add "$P$1"
  ip -n "$P$1" link set lo up
  # Like a Docker container on a network without IPv6: no link-local chatter on the overlay.
  nsx "$1" sysctl -q -w net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
  echo "    h$2\$ veil network connect --netns /run/netns/$P$1 $3 $1"
  IP[$1]=$(veil_q "$2" network connect --netns "/run/netns/$P$1" "$3" "$1")
  say "$1 on h$2, network $3: ${IP[$1]}"
}
ping_ok() { # ping_ok <from> <to> <count>
  local out
  out=$(nsx "$1" ping -c "$3" -i 0.2 -W 2 "${IP[$2]}" 2>&1) || { echo "$out" | indent; return 1; }
  say "$1 -> $2 (${IP[$2]}): $(echo "$out" | grep -o '[0-9]* received, [0-9.]*% packet loss'), $(echo "$out" | awk -F/ '/^rtt/ {print "avg " $5 " ms"}')"
}
pings() { # pings "<from> <to>" ...: the first packets resolve ARP across the overlay; then measure.
  local pair
  for pair in "$@"; do
    set -- $pair
    for _ in $(seq 1 50); do nsx "$1" ping -c 1 -W 1 "${IP[$2]}" >/dev/null 2>&1 && break; sleep 0.2; done
    ping_ok "$1" "$2" 5 || die "$1 cannot reach $2"
  done
}
start_tshark() { # start_tshark <file> <filter>: on h1's eth0, in the background; returns once it captures
  ip netns exec "${P}h1" tshark -i eth0 -n -f "$2" -w "$1" -a duration:60 >/dev/null 2>"$1.log" &
  TSHARK=$!
  BG_PIDS+=("$TSHARK")
  # A busy machine may take seconds to start dumpcap: wait for it rather than guess.
  for _ in $(seq 1 200); do grep -q "Capturing on" "$1.log" 2>/dev/null && return 0; sleep 0.1; done
  die "tshark did not start capturing on h1's eth0: $(cat "$1.log")"
}
stop_tshark() { sleep 0.5; kill -INT "$TSHARK" 2>/dev/null || true; wait "$TSHARK" 2>/dev/null || true; }
capture() { # capture <file> <from> <to>: tshark on h1's eth0 while <from> pings <to>
  start_tshark "$1" "udp port 4500 or udp port 4789"
  nsx "$2" ping -c 5 -i 0.2 "${IP[$3]}" >/dev/null 2>&1 || true
  stop_tshark
}
summary() { tshark -r "$1" -n 2>/dev/null | head -n "$2" | sed 's/^ *//' | indent; }
protocols() { tshark -r "$1" -n -T fields -e frame.protocols 2>/dev/null | sort | uniq -c | sed 's/^ *//' | indent; }

section "containers on 'secure', one per host, attached through each host's own API"
container s1 1 secure
container s2 2 secure
container s3 3 secure
pings "s1 s2" "s1 s3" "s2 s3"

section "tshark on h1's underlay (its eth0) while s1 pings s2 on 'secure'"
capture "$DIR/secure.pcap" s1 s2
echo "    first packets:"
summary "$DIR/secure.pcap" 4
echo "    protocol stacks seen:"
protocols "$DIR/secure.pcap"
total=$(tshark -r "$DIR/secure.pcap" -n 2>/dev/null | wc -l)
clear=$(tshark -r "$DIR/secure.pcap" -n -Y '!esp || vxlan || icmp' 2>/dev/null | wc -l)
esp=$(tshark -r "$DIR/secure.pcap" -n -Y 'esp' 2>/dev/null | wc -l)
[ "$total" -gt 0 ] || die "tshark saw nothing on h1's eth0"
[ "$clear" = 0 ] && [ "$esp" = "$total" ] || die "the encrypted network's wire showed $clear packets in clear ($esp of $total ESP)"
say "secure: $total packets on the wire, all ESP in UDP 4500; no VXLAN, no ICMP visible"

section "containers on 'plain' (h1, h2), and the same capture while p1 pings p2"
container p1 1 plain
container p2 2 plain
pings "p1 p2"
capture "$DIR/plain.pcap" p1 p2
echo "    first packets:"
summary "$DIR/plain.pcap" 4
echo "    protocol stacks seen:"
protocols "$DIR/plain.pcap"
icmp=$(tshark -r "$DIR/plain.pcap" -n -Y 'vxlan && icmp' 2>/dev/null | wc -l)
[ "$icmp" -gt 0 ] || die "no ICMP inside VXLAN seen on the plain network"
say "plain: standard VXLAN (UDP 4789), $icmp ICMP packets readable by anyone on the wire"

# ── rotation under traffic ───────────────────────────────────────────────────────────────────────
section "key rotation on 'secure' while s1 pings s2 every 50 ms"
veil 1 network keys secure
before=$(veil_q 2 network keys secure --format json | node -e 'const k=JSON.parse(require("fs").readFileSync(0,"utf8"));console.log(Math.max(...k.Epochs.filter(e=>e.State==="active").map(e=>e.Epoch)))')
start_tshark "$DIR/rotation.pcap" "udp port 4500"
ip netns exec "${P}s1" ping -i 0.05 -W 1 "${IP[s2]}" >"$DIR/rotation-ping.txt" 2>&1 &
PING=$!
BG_PIDS+=("$PING")
sleep 1
veil 3 network rotate secure
for _ in $(seq 1 150); do
  all=1
  for i in "${HOSTS[@]}"; do
    veil_q "$i" network keys secure --format json | node -e '
      const k = JSON.parse(require("fs").readFileSync(0, "utf8"));
      process.exit(k.Epochs.some((e) => e.Epoch === Number(process.argv[1]) + 1 && e.State === "active" && e.OutboundHere) ? 0 : 1);
    ' "$before" || all=0
  done
  [ "$all" = 1 ] && break
  sleep 0.2
done
[ "$all" = 1 ] || die "epoch $((before + 1)) did not become active on every host"
say "epoch $((before + 1)) active and sealing on h1, h2 and h3"
sleep 1
kill -INT "$PING"; wait "$PING" 2>/dev/null || true
stop_tshark
stats=$(grep -o '[0-9]* packets transmitted, [0-9]* received' "$DIR/rotation-ping.txt")
say "ping during the rotation: $stats"
veil 1 network keys secure
spis=$(tshark -r "$DIR/rotation.pcap" -n -Y "ip.src == $UNDERLAY_NET.1 && ip.dst == $UNDERLAY_NET.2" -T fields -e esp.spi 2>/dev/null | uniq | tr '\n' ' ')
say "SPIs on the wire h1 -> h2, in order: $spis"
sent=$(echo "$stats" | awk '{print $1}'); got=$(echo "$stats" | awk '{print $4}')
[ "$got" -ge $((sent - 1)) ] || die "ping lost $((sent - got)) of $sent packets during the rotation"

# ── tidy up through the API, then the teardown trap does the rest ────────────────────────────────
section "disconnect and remove through the CLI"
for c in s1:1:secure s2:2:secure s3:3:secure p1:1:plain p2:2:plain; do
  IFS=: read -r name host net <<<"$c"
  veil "$host" network disconnect "$net" "$name"
done
veil 1 network rm secure plain
veil 1 network ls
