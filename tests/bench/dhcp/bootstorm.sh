#!/usr/bin/env bash
# Boot storm (issue 3): N machines at once (default 500), each doing the whole chain
# a BIOS PXE machine does: DHCP (full mode) → TFTP undionly.kpxe → /boot.ipxe →
# its own /ipxe script → kernel (8 MiB) + initrd (1.2 MiB) over HTTP → config URL.
# Against the appliance (`dhcp.mode: full`, release build), then against dnsmasq
# (DHCP + TFTP) + nginx serving the same files with one static script. Reports time
# for all N, failures, and peak RSS (VmHWM) of the servers. Namespaces and
# 10.97.0.0/16 are this script's own; nothing leaves the machine.
#
#   sudo tests/bench/dhcp/bootstorm.sh [release/provisioner] [N]
#
# BOOTSTORM_OUT=dir writes there; BOOTSTORM_NO_BUILD=1 skips building the generator;
# BOOTSTORM_PEERS=0 measures the appliance only (an A/B of two builds).
# bootstorm.tsv: per server the time, machines booted, TFTP retransmits, server CPU
# time (utime+stime of every server process) and peak RSS.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
target=${CARGO_TARGET_DIR:-$repo/target}
bin=${1:-$target/release/provisioner}
n=${2:-500}
[ "${BOOTSTORM_NO_BUILD:-0}" = 1 ] || (cd "$repo" && cargo build --release -q -p provisioner-e2e --example bootstorm)
gen=$target/release/examples/bootstorm
for t in dnsmasq nginx ip; do command -v $t >/dev/null || { echo "missing $t (see packages.txt)" >&2; exit 1; }; done
out=${BOOTSTORM_OUT:-"$here/results/bootstorm-$(date -u +%Y%m%dT%H%M%SZ)"}
# 2,000 machines hold sockets on both sides (the generator runs a thread each).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
mkdir -p "$out"
S=pbench-storm-srv C=pbench-storm-cli
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
work=$(mktemp -d /var/tmp/pbench-storm.XXXXXX)
ip netns add $S; ip netns add $C
ip -n $S link add bs0 type veth peer name bs1 netns $C
ip -n $S addr add 10.97.0.1/16 dev bs0; ip -n $C addr add 10.97.0.2/16 dev bs1
for ns in $S $C; do ip -n $ns link set lo up; done
ip -n $S link set bs0 up; ip -n $C link set bs1 up

# The same payload bytes for both servers.
mkdir -p "$work/app/images" "$work/app/profiles/profiles" "$work/app/profiles/groups" "$work/app/cache/storm" "$work/app/infra" "$work/www/assets/storm"
head -c 8388608 /dev/urandom > "$work/app/cache/storm/vmlinuz"
head -c 1258291 /dev/urandom > "$work/app/cache/storm/initrd.gz"
cp "$work/app/cache/storm/"* "$work/www/assets/storm/"
echo "id: storm\nkernel: { file: vmlinuz }\ninitrds: [ { file: initrd.gz } ]\nargs: [console=ttyS0]" | sed 's/\\n/\n/g' > "$work/app/images/storm.yaml"
printf 'id: storm\nimage: storm\nconfig: plain\n' > "$work/app/profiles/profiles/storm.yaml"
cat > "$work/app/provisioner.yaml" <<YAML
state_dir: $work/app/state
server_ip: 10.97.0.1
http_listen: 10.97.0.1:8080
api_listen: 127.0.0.1:19091
tftp_listen: 10.97.0.1:69
tftp_root: /usr/lib/ipxe
profiles_dir: $work/app/profiles
images_dir: $work/app/images
cache_dir: $work/app/cache
infra_dir: $work/app/infra
unknown_policy: profile:storm
dhcp:
  mode: full
  interface: bs0
  subnet: 10.97.0.0/16
  pool: { start: 10.97.1.0, end: 10.97.250.255 }
  probe_secs: 0
  max_in_flight: 1024
  # 500 new machines at once: the bench compares raw speed with dnsmasq.
  unknown_offer_rate: 0
# Every machine of the storm comes from the generator's one address (a relay in
# the real world carries many machines too): the per-address caps meant for one
# machine per address are lifted, as dnsmasq and nginx have none.
# Peer binding (a config only to the address and neighbour entry of the machine it
# is for) cannot hold when one address plays every machine: off here, as in tests.
peer_binding: { enabled: false }
tftp: { max_sessions: 4096, max_sessions_per_ip: 4096 }
http: { max_connections: 8192, max_connections_per_ip: 8192, script_rate_per_ip: 1000000, script_burst_per_ip: 1000000 }
YAML

hwm() { awk '/VmHWM/ {print $2}' /proc/$1/status; }
ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
field() { tail -1 "$1" | tr ' ' '\n' | awk -F= -v k="$2" '$1 == k {print $2}'; }
row() { # server result-file cpu_ticks peak_kib
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$n" "$(field "$2" ok)" "$(field "$2" seconds)" \
    "$(field "$2" tftp_retransmits)" "$3" "$4" "$(cut -d' ' -f1 /proc/loadavg)" >> "$out/bootstorm.tsv"
}
printf 'server\tmachines\tok\tseconds\ttftp_retransmits\tcpu_ticks\tpeak_rss_kib\tloadavg\n' > "$out/bootstorm.tsv"
{
  echo "# boot storm, $n machines, $(date -u +%FT%TZ)"
  echo "host: $(nproc) cores, load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "appliance: $bin ($(git -C "$repo" rev-parse --short HEAD)); $(dnsmasq --version | head -1); $(nginx -v 2>&1)"
} > "$out/summary.txt"

PROVISIONER_LOG=warn ip netns exec $S "$bin" serve --config "$work/app/provisioner.yaml" > "$out/appliance.log" 2>&1 &
app=$!
sleep 2
kill -0 $app || { cat "$out/appliance.log"; exit 1; }
ip netns exec $C "$gen" 10.97.0.1 10.97.0.2 "$n" 8080 > "$out/appliance-storm.txt" 2>&1 || true
echo "appliance: $(cat "$out/appliance-storm.txt" | tail -1); peak RSS $(( $(hwm $app) / 1024 )) MiB" | tee -a "$out/summary.txt"
row appliance "$out/appliance-storm.txt" "$(ticks $app)" "$(hwm $app)"
kill $app; wait $app 2>/dev/null || true
[ "${BOOTSTORM_PEERS:-1}" = 1 ] || exit 0

# Peers: dnsmasq for DHCP + TFTP, nginx for HTTP, one static script for everyone.
printf '#!ipxe\nchain http://10.97.0.1:8081/ipxe\n' > "$work/www/boot.ipxe"
printf '#!ipxe\nkernel http://10.97.0.1:8081/assets/storm/vmlinuz initrd=initrd.gz provisioner.config=http://10.97.0.1:8081/cfg\ninitrd http://10.97.0.1:8081/assets/storm/initrd.gz\nboot\n' > "$work/www/ipxe"
printf 'config for the storm\n' > "$work/www/cfg"
cat > "$work/nginx.conf" <<NGINX
daemon off;
worker_processes 2;
user root;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  server { listen 10.97.0.1:8081; root $work/www; default_type application/octet-stream; }
}
NGINX
ip netns exec $S dnsmasq -d --conf-file=/dev/null --port=0 --interface=bs0 --bind-interfaces --no-ping \
  --dhcp-authoritative --dhcp-lease-max=1000000 --dhcp-range=10.97.1.0,10.97.250.255,255.255.0.0,1h \
  --dhcp-leasefile="$work/dnsmasq.leases" --enable-tftp --tftp-root=/usr/lib/ipxe --dhcp-boot=undionly.kpxe,,10.97.0.1 \
  --user=root --pid-file="$work/dnsmasq.pid" > "$work/dnsmasq.log" 2>&1 &
dm=$!
ip netns exec $S nginx -c "$work/nginx.conf" > "$work/nginx.log" 2>&1 &
ng=$!
sleep 2
ip netns exec $C "$gen" 10.97.0.1 10.97.0.2 "$n" 8081 > "$out/peers-storm.txt" 2>&1 || true
ngrss=0; ngcpu=0
for p in $(pgrep -f "nginx -c $work/nginx.conf"; pgrep -P $ng 2>/dev/null); do ngrss=$((ngrss + $(hwm $p))); ngcpu=$((ngcpu + $(ticks $p))); done
row "dnsmasq+nginx" "$out/peers-storm.txt" $(( $(ticks $dm) + ngcpu )) $(( $(hwm $dm) + ngrss ))
echo "dnsmasq + nginx: $(tail -1 "$out/peers-storm.txt"); peak RSS dnsmasq $(( $(hwm $dm) / 1024 )) MiB, nginx $(( ngrss / 1024 )) MiB" | tee -a "$out/summary.txt"
