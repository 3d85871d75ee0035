# shellcheck shell=bash
# Shared helpers for the benchmarks: network namespaces, servers, counters, medians.
# Sourced by run.sh and the bench_*.sh scripts; never run on its own.
#
# Topology (all inside namespaces this script creates, nothing on the host's links):
#
#   netns ptb-srv                                   netns ptb-cli
#   ptb-s0: 10.99.0.1/24  appliance (TFTP :69, HTTP :8080)
#           10.99.0.2/24  dnsmasq TFTP :69, nginx :8080   <--veth-->  ptb-c0: 10.99.0.10/24
#
# Both servers sit on the same veth pair, reached by the same client over the same
# path; only the destination address differs.

set -o pipefail

BENCH_DIR=${BENCH_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}
REPO=${REPO:-$(cd "$BENCH_DIR/../.." && pwd)}
WORK=${BENCH_WORK:-/tmp/ptbench}            # scratch: files served, state, pids
RESULTS=${BENCH_RESULTS:-$BENCH_DIR/results}
RAW=$RESULTS/raw

NS_SRV=ptb-srv
NS_CLI=ptb-cli
VETH_SRV=ptb-s0
VETH_CLI=ptb-c0
APP_IP=10.99.0.1
PEER_IP=10.99.0.2
CLI_IP=10.99.0.10
HTTP_PORT=8080

# Pids of the long-running servers we start (killed by cleanup, by pid only).
declare -a BENCH_PIDS=()
APP_PID=""
DNSMASQ_PID=""
NGINX_PID=""

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }

in_srv() { ip netns exec "$NS_SRV" "$@"; }
in_cli() { ip netns exec "$NS_CLI" "$@"; }

# --- network ---------------------------------------------------------------------

net_down() {
    ip netns del "$NS_CLI" 2>/dev/null || true
    ip netns del "$NS_SRV" 2>/dev/null || true
}

net_up() {
    net_down
    ip netns add "$NS_SRV"
    ip netns add "$NS_CLI"
    ip link add "$VETH_SRV" netns "$NS_SRV" type veth peer name "$VETH_CLI" netns "$NS_CLI"
    in_srv ip link set lo up
    in_cli ip link set lo up
    in_srv ip addr add "$APP_IP/24" dev "$VETH_SRV"
    in_srv ip addr add "$PEER_IP/24" dev "$VETH_SRV"
    in_cli ip addr add "$CLI_IP/24" dev "$VETH_CLI"
    in_srv ip link set "$VETH_SRV" up
    in_cli ip link set "$VETH_CLI" up
    # Bigger socket buffers are NOT set: both servers run with the kernel defaults.
    for _ in $(seq 1 50); do
        [[ $(in_cli cat "/sys/class/net/$VETH_CLI/operstate") == up &&
            $(in_srv cat "/sys/class/net/$VETH_SRV/operstate") == up ]] && return 0
        sleep 0.1
    done
    die "veth pair did not come up"
}

# Client-side veth counters (the same kernel counters `ip -s link` prints).
cli_counter() { in_cli cat "/sys/class/net/$VETH_CLI/statistics/$1"; }

# --- process helpers -------------------------------------------------------------

# utime+stime of a pid and its threads, in clock ticks (0 if gone).
cpu_ticks() {
    local pid=$1
    [[ -r /proc/$pid/stat ]] || { echo 0; return; }
    # fields 14,15 after the ")"; the comm may contain spaces, so cut at the last ")".
    sed 's/.*) //' "/proc/$pid/stat" | awk '{print $12 + $13}'
}

# Sum of cpu_ticks over several pids.
cpu_ticks_sum() {
    local t=0 p
    for p in "$@"; do t=$((t + $(cpu_ticks "$p"))); done
    echo "$t"
}

# Children pids of a pid (nginx workers).
child_pids() { pgrep -P "$1" 2>/dev/null | tr '\n' ' '; }

status_kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

wait_for_log() { # file pattern seconds
    local f=$1 pat=$2 secs=$3
    for _ in $(seq 1 $((secs * 10))); do
        grep -q "$pat" "$f" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

stop_pid() { # pid
    local pid=$1
    [[ -n $pid ]] || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

# --- servers ---------------------------------------------------------------------

prepare_files() {
    rm -rf "$WORK"
    mkdir -p "$WORK"/{state,tftp,profiles/groups,profiles/profiles,images,infra,cache/bench,nginx}
    chmod 755 "$WORK" "$WORK"/*
    cp -L /usr/lib/ipxe/snponly.efi /usr/lib/ipxe/ipxe.efi /usr/lib/ipxe/undionly.kpxe "$WORK/tftp/"
    # Incompressible payloads, made once per run.
    head -c $((32 * 1024 * 1024)) /dev/urandom >"$WORK/tftp/big32.bin"
    head -c $((100 * 1024 * 1024)) /dev/urandom >"$WORK/cache/bench/big100.bin"
    chmod 644 "$WORK"/tftp/* "$WORK"/cache/bench/*
    cat >"$WORK/images/bench.yaml" <<'EOF'
id: bench
kernel: {file: big100.bin}
initrds: []
args: []
EOF
    # The storm's 100 clients share one address, so the per-address session cap (8 by
    # default, right for firmware: one machine, one address) is raised. Builds older
    # than the own TFTP engine reject the field: BENCH_TFTP_EXTRA= (empty) for them.
    cat >"$WORK/appliance.yaml" <<EOF
state_dir: $WORK/state
server_ip: $APP_IP
http_listen: $APP_IP:$HTTP_PORT
api_listen: 127.0.0.1:19091
tftp_listen: $APP_IP:69
tftp_root: $WORK/tftp
profiles_dir: $WORK/profiles
images_dir: $WORK/images
infra_dir: $WORK/infra
cache_dir: $WORK/cache
unknown_policy: record
tftp: { block_size_limit: 1468, window_size_limit: 16${BENCH_TFTP_EXTRA-, max_sessions_per_ip: 256} }
EOF
    # Warm the page cache so neither server pays the first disk read.
    cat "$WORK"/tftp/* "$WORK"/cache/bench/* >/dev/null
    SHA_BIG32=$(sha256sum "$WORK/tftp/big32.bin" | cut -d' ' -f1)
    SHA_SNP=$(sha256sum "$WORK/tftp/snponly.efi" | cut -d' ' -f1)
    SHA_BIG100=$(sha256sum "$WORK/cache/bench/big100.bin" | cut -d' ' -f1)
    SIZE_SNP=$(stat -c %s "$WORK/tftp/snponly.efi")
    export SHA_BIG32 SHA_SNP SHA_BIG100 SIZE_SNP
}

start_appliance() {
    local logf=$RAW/appliance.log
    : >"$logf"
    # `ip netns exec` execs the command, so $! is the appliance's own pid.
    ip netns exec "$NS_SRV" env NO_COLOR=1 PROVISIONER_LOG="${PROVISIONER_LOG:-info}" "$BIN" serve --config "$WORK/appliance.yaml" >>"$logf" 2>&1 &
    APP_PID=$!
    BENCH_PIDS+=("$APP_PID")
    if ! wait_for_log "$logf" "listening for TFTP on" 30 || ! wait_for_log "$logf" "listening for HTTP on" 30; then
        cat "$logf" >&2
        die "appliance did not start"
    fi
    log "appliance pid $APP_PID ready"
}

start_dnsmasq() {
    # TFTP only: --port=0 disables DNS, no dhcp-range means no DHCP. The default
    # --tftp-max is 50 concurrent transfers; raised to 200 so a 100-client storm is
    # served without dnsmasq refusing requests.
    ip netns exec "$NS_SRV" dnsmasq --keep-in-foreground --conf-file=/dev/null --port=0 \
        --bind-interfaces --listen-address="$PEER_IP" \
        --enable-tftp --tftp-root="$WORK/tftp" --tftp-no-fail --tftp-max=200 \
        --pid-file="$WORK/dnsmasq.pid" --log-facility="$WORK/dnsmasq.log" \
        >>"$RAW/dnsmasq.stdout" 2>&1 &
    DNSMASQ_PID=$!
    BENCH_PIDS+=("$DNSMASQ_PID")
    for _ in $(seq 1 50); do
        in_srv ss -Hulnp 2>/dev/null | grep -q "$PEER_IP:69 " && { log "dnsmasq pid $DNSMASQ_PID ready"; return 0; }
        sleep 0.1
    done
    die "dnsmasq did not start"
}

start_nginx() {
    cat >"$WORK/nginx.conf" <<EOF
worker_processes auto;
daemon off;
pid $WORK/nginx.pid;
error_log $RAW/nginx-error.log warn;
events { worker_connections 1024; }
http {
    access_log $WORK/nginx-access.log;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    default_type application/octet-stream;
    client_body_temp_path $WORK/nginx/body;
    proxy_temp_path $WORK/nginx/proxy;
    fastcgi_temp_path $WORK/nginx/fastcgi;
    uwsgi_temp_path $WORK/nginx/uwsgi;
    scgi_temp_path $WORK/nginx/scgi;
    server {
        listen $PEER_IP:$HTTP_PORT;
        location /assets/ { alias $WORK/cache/; }
    }
}
EOF
    ip netns exec "$NS_SRV" nginx -c "$WORK/nginx.conf" >>"$RAW/nginx.stdout" 2>&1 &
    NGINX_PID=$!
    BENCH_PIDS+=("$NGINX_PID")
    for _ in $(seq 1 50); do
        in_cli curl -s -o /dev/null -r 0-0 "http://$PEER_IP:$HTTP_PORT/assets/bench/big100.bin" && { log "nginx pid $NGINX_PID ready"; return 0; }
        sleep 0.1
    done
    die "nginx did not start"
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    local p
    for p in "${BENCH_PIDS[@]}"; do stop_pid "$p"; done
    # Anything still inside our own namespaces was started by this run.
    for ns in "$NS_CLI" "$NS_SRV"; do
        for p in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$p" 2>/dev/null || true; done
    done
    net_down
    # Scratch files (130 MiB of payloads); BENCH_KEEP_WORK=1 keeps them for a look.
    [[ ${BENCH_KEEP_WORK:-0} == 1 ]] || rm -rf "$WORK" /dev/shm/ptbench-out
    if [[ -n ${WATCHDOG_PID:-} ]]; then pkill -P "$WATCHDOG_PID" 2>/dev/null; kill "$WATCHDOG_PID" 2>/dev/null; fi
    exit "$rc"
}

# --- stats -----------------------------------------------------------------------

# median of numbers on stdin (one per line)
median() { sort -g | awk '{a[NR]=$1} END {if (NR==0) {print "nan"; exit} if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.4f", b - a}'; }
loadavg() { cut -d' ' -f1 /proc/loadavg; }
