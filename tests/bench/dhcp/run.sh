#!/usr/bin/env bash
# DHCP benchmark (issue 3): perfdhcp (Kea's load generator) against the appliance's
# built-in DHCP, Kea (memfile, leases persisted) and dnsmasq, one at a time, on the
# same veth pair between two network namespaces this script creates (10.98.0.0/16,
# nothing leaves the machine). Not a timed test: raw perfdhcp output goes to
# results/<date>/, ratios to results/<date>/summary.txt.
#
#   sudo tests/bench/dhcp/run.sh [path/to/release/provisioner]
#
# Full DORA: for each server, rates step up; the highest rate whose drops stay
# under 1 % (DISCOVER-OFFER and REQUEST-ACK together) is its sustained rate.
# Proxy: PXE DISCOVERs (option 60 PXEClient, option 93 = 0) answered per second,
# appliance `mode: proxy` against dnsmasq `dhcp-range=…,proxy` + `pxe-service`.
# CPU per lease: at fixed offered rates (CPU_RATES, default 2000 4000 6000/s, SECS
# each, a fresh server per rate), the server's whole-process CPU time
# (utime+stime, /proc/<pid>/stat) per 1,000 completed DORA exchanges, appliance
# and Kea; results/<date>/dhcp_cpu.tsv.
#
# PHASES="steps cpu" (default both) picks the parts; DHCP_OUT=dir writes there.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
bin=${1:-${CARGO_TARGET_DIR:-$repo/target}/release/provisioner}
[ -x "$bin" ] || { echo "build it first: cargo build --release -p provisioner" >&2; exit 1; }
for t in perfdhcp kea-dhcp4 dnsmasq ip; do command -v "$t" >/dev/null || { echo "missing $t (apt-get install kea-admin kea-dhcp4-server dnsmasq-base iproute2)" >&2; exit 1; }; done
RATES=${RATES:-"250 500 1000 2000 3000 4000 6000 8000"}
SECS=${SECS:-10}
CPU_RATES=${CPU_RATES:-"2000 4000 6000"}
PHASES=${PHASES:-"steps cpu"}
out=${DHCP_OUT:-"$here/results/$(date -u +%Y%m%dT%H%M%SZ)"}
mkdir -p "$out"
S=pbench-dhcp-srv C=pbench-dhcp-cli
work=""
cleanup() {
  for ns in $S $C; do
    for p in $(ip netns pids $ns 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
    ip netns del $ns 2>/dev/null || true
  done
  if [ -n "$work" ]; then rm -rf "$work"; fi
}
trap cleanup EXIT
cleanup
work=$(mktemp -d /var/tmp/pbench-dhcp.XXXXXX)
ip netns add $S; ip netns add $C
ip -n $S link add bd0 type veth peer name bd1 netns $C
ip -n $S addr add 10.98.0.1/16 dev bd0; ip -n $C addr add 10.98.0.2/16 dev bd1
for ns in $S $C; do ip -n $ns link set lo up; done
ip -n $S link set bd0 up; ip -n $C link set bd1 up

{
  echo "# DHCP benchmark $(date -u +%FT%TZ)"
  echo "host: $(nproc) cores, $(uname -r), load average at start: $(cut -d" " -f1-3 /proc/loadavg)"
  echo "kea: $(kea-dhcp4 -v 2>&1 | head -1); dnsmasq: $(dnsmasq --version | head -1)"
  echo "appliance: $bin ($(git -C "$repo" rev-parse --short HEAD))"
} > "$out/summary.txt"

appliance_cfg() { # mode
  mkdir -p "$work/app/profiles/groups" "$work/app/profiles/profiles" "$work/app/images" "$work/app/infra"
  rm -rf "$work/app/state"
  cat > "$work/app/provisioner.yaml" <<YAML
state_dir: $work/app/state
server_ip: 10.98.0.1
http_listen: 10.98.0.1:18080
api_listen: 127.0.0.1:19090
tftp_listen: 10.98.0.1:16969
profiles_dir: $work/app/profiles
images_dir: $work/app/images
infra_dir: $work/app/infra
unknown_policy: record
log_format: json
dhcp:
  mode: $1
  interface: bd0
  subnet: 10.98.0.0/16
  pool: { start: 10.98.1.0, end: 10.98.250.255 }
  lease_time_secs: 3600
  probe_secs: 0
  max_in_flight: 1024
  per_mac_rate: 1000
  per_mac_burst: 1000
  # perfdhcp's random plain clients measure the allocator, not the pool protection.
  pool_policy: any
  unknown_offer_rate: 0
YAML
}

start_server() { # name
  case $1 in
    appliance|appliance-proxy)
      appliance_cfg "$([ "$1" = appliance ] && echo full || echo proxy)"
      PROVISIONER_LOG=warn ip netns exec $S "$bin" serve --config "$work/app/provisioner.yaml" > "$work/server.log" 2>&1 &
      ;;
    kea)
      rm -f "$work/kea-leases.csv"
      cat > "$work/kea.json" <<JSON
{ "Dhcp4": {
  "interfaces-config": { "interfaces": [ "bd0" ], "dhcp-socket-type": "udp" },
  "lease-database": { "type": "memfile", "persist": true, "name": "$work/kea-leases.csv", "lfc-interval": 0 },
  "valid-lifetime": 3600,
  "subnet4": [ { "id": 1, "subnet": "10.98.0.0/16", "pools": [ { "pool": "10.98.1.0 - 10.98.250.255" } ] } ],
  "loggers": [ { "name": "kea-dhcp4", "severity": "WARN", "output_options": [ { "output": "$work/kea.log" } ] } ]
} }
JSON
      KEA_LOCKFILE_DIR=$work KEA_PIDFILE_DIR=$work ip netns exec $S kea-dhcp4 -c "$work/kea.json" > "$work/server.log" 2>&1 &
      ;;
    dnsmasq)
      rm -f "$work/dnsmasq.leases"
      ip netns exec $S dnsmasq -d --conf-file=/dev/null --port=0 --interface=bd0 --bind-interfaces --no-ping \
        --dhcp-authoritative --dhcp-lease-max=1000000 --dhcp-range=10.98.1.0,10.98.250.255,255.255.0.0,1h \
        --dhcp-leasefile="$work/dnsmasq.leases" --user=root --pid-file="$work/dnsmasq.pid" > "$work/server.log" 2>&1 &
      ;;
    dnsmasq-proxy)
      ip netns exec $S dnsmasq -d --conf-file=/dev/null --port=0 --interface=bd0 --bind-interfaces \
        --dhcp-range=10.98.0.0,proxy,255.255.0.0 --pxe-service=x86PC,"boot",undionly --user=root \
        --pid-file="$work/dnsmasq.pid" > "$work/server.log" 2>&1 &
      ;;
  esac
  server_pid=$!
  sleep 2
  kill -0 $server_pid 2>/dev/null || { echo "$1 did not start:"; cat "$work/server.log"; exit 1; }
}

stop_server() { kill $server_pid 2>/dev/null || true; wait $server_pid 2>/dev/null || true; sleep 1; }

# perfdhcp's summary: sent/received per exchange → drop percentage (both exchanges).
drops() {
  awk '/^\*\*\*\*\* Statistics for:/ {ex=$0}
       /sent packets:/ {s+=$3} /received packets:/ {r+=$3}
       END { if (s>0) printf "%.2f", 100*(s-r)/s; else print "100" }' "$1"
}
rate_of() { # file → achieved exchanges/s (received responses of the last exchange / secs)
  awk -v secs="$SECS" '/received packets:/ {r=$3} END { printf "%.0f", r/secs }' "$1"
}

run_dora() { # name
  start_server "$1"
  best=0
  for r in $RATES; do
    f="$out/$1-dora-r$r.txt"
    ip netns exec $C perfdhcp -4 -l bd1 -r "$r" -p "$SECS" -R 1000000 10.98.0.1 > "$f" 2>&1 || true
    d=$(drops "$f")
    echo "$1 DORA rate $r/s: drops $d% (achieved $(rate_of "$f")/s)" | tee -a "$out/summary.txt"
    if awk -v d="$d" 'BEGIN{exit !(d<1.0)}'; then best=$r; else break; fi
  done
  eval "best_$2=$best"
  stop_server
}

run_proxy() { # name var
  start_server "$1"
  best=0
  for r in $RATES; do
    f="$out/$1-pxe-r$r.txt"
    ip netns exec $C perfdhcp -4 -l bd1 -i -r "$r" -p "$SECS" -R 1000000 -o 60,505845436c69656e743a417263683a30303030303a554e44493a303032303031 -o 93,0000 10.98.0.1 > "$f" 2>&1 || true
    d=$(drops "$f")
    echo "$1 PXE offers rate $r/s: drops $d% (achieved $(rate_of "$f")/s)" | tee -a "$out/summary.txt"
    if awk -v d="$d" 'BEGIN{exit !(d<1.0)}'; then best=$r; else break; fi
  done
  eval "best_$2=$best"
  stop_server
}

# utime + stime in clock ticks (fields 14 and 15; the comm may hold spaces, so cut
# at the last ")").
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }

# CPU per 1,000 DORA at a fixed offered rate, a fresh server (empty lease store)
# each time so every DORA allocates a new lease.
run_cpu() { # name rate
  local r=$2 f c0 c1 acks
  {
    start_server "$1"
    f="$out/$1-cpu-r$r.txt"
    c0=$(cpu_ticks "$server_pid")
    ip netns exec $C perfdhcp -4 -l bd1 -r "$r" -p "$SECS" -R 1000000 10.98.0.1 > "$f" 2>&1 || true
    sleep 1 # work still queued when perfdhcp stops (a group commit) is the server's cost too
    c1=$(cpu_ticks "$server_pid")
    acks=$(awk '/received packets:/ {r=$3} END {print r+0}' "$f")
    awk -v s="$1" -v r="$r" -v a="$acks" -v t=$((c1 - c0)) -v secs="$SECS" -v d="$(drops "$f")" -v l="$(cut -d' ' -f1 /proc/loadavg)" \
      'BEGIN { printf "%s\t%s\t%.0f\t%s\t%s\t%s\t%.1f\t%s\n", s, r, a / secs, a, d, t, (a > 0 ? t * 10 / (a / 1000) : 0), l }' >> "$out/dhcp_cpu.tsv"
    echo "$1 at $r/s: $(tail -1 "$out/dhcp_cpu.tsv" | cut -f3-8 | tr '\t' ' ') (achieved/s acks drops% ticks ms_per_1000 load)" | tee -a "$out/summary.txt"
    stop_server
  }
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b>0) printf "%.2f", a/b; else print "n/a" }'; }

if [[ " $PHASES " == *" steps "* ]]; then
  run_dora appliance app
  run_dora kea kea
  run_dora dnsmasq dnsmasq
  run_proxy appliance-proxy appproxy
  run_proxy dnsmasq-proxy dnsproxy
  {
    echo
    echo "## sustained rate (< 1 % drops, ${SECS}s per step, steps: $RATES)"
    echo "full DORA: appliance $best_app/s, Kea memfile $best_kea/s, dnsmasq $best_dnsmasq/s"
    echo "  appliance/Kea = $(ratio "$best_app" "$best_kea"), appliance/dnsmasq = $(ratio "$best_app" "$best_dnsmasq")"
    echo "proxy PXE offers: appliance $best_appproxy/s, dnsmasq proxy $best_dnsproxy/s"
    echo "  appliance/dnsmasq = $(ratio "$best_appproxy" "$best_dnsproxy")"
  } | tee -a "$out/summary.txt"
fi
if [[ " $PHASES " == *" cpu "* ]]; then
  printf 'server\trate\tachieved_per_s\tacks\tdrops_pct\tcpu_ticks\tms_per_1000\tloadavg\n' > "$out/dhcp_cpu.tsv"
  # Interleaved per rate, so a drift in the machine's load falls on both.
  for r in $CPU_RATES; do
    run_cpu appliance "$r"
    run_cpu kea "$r"
  done
fi
