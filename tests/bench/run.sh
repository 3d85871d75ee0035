#!/usr/bin/env bash
# Benchmarks of the appliance against reference servers, run by hand as root:
#
#   sudo tests/bench/run.sh [--reps N] [--storm-reps N] [--http-duration 20s] [--storm-clients 100]
#                           [--no-build] [--diag-tools] [tftp] [capture] [diag] [storm] [http]
#
# --diag-tools also installs tshark and linux-perf (the capture and diag steps are
# skipped, with a note, without them). PROVISIONER_BIN=path with --no-build measures
# another binary; BENCH_RESULTS=dir writes the results elsewhere.
# With no bench names it runs all of them. Everything runs inside two network
# namespaces joined by one veth pair (10.99.0.0/24); nothing leaves the machine.
# Raw outputs go to tests/bench/results/ (raw/ for logs and wrk output), the table of
# medians and ratios to tests/bench/results/summary.md. See README.md for the method.
# Not part of CI: benchmarks are not tests.

set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
source "$BENCH_DIR/lib.sh"
# shellcheck source=bench_tftp.sh
source "$BENCH_DIR/bench_tftp.sh"
# shellcheck source=bench_http.sh
source "$BENCH_DIR/bench_http.sh"

REPS=7
STORM_REPS=15   # storms are short and noisier: more repetitions
HTTP_DUR=20s
STORM_N=100
BUILD=1
WITH_TSHARK=0
MAX_SECONDS=${BENCH_MAX_SECONDS:-2700}   # the whole run is bounded (45 min default)
BENCHES=()
while (($#)); do
    case $1 in
        --reps) REPS=$2; shift ;;
        --storm-reps) STORM_REPS=$2; shift ;;
        --http-duration) HTTP_DUR=$2; shift ;;
        --storm-clients) STORM_N=$2; shift ;;
        --no-build) BUILD=0 ;;
        --diag-tools) WITH_TSHARK=1 ;;
        tftp | capture | diag | storm | http) BENCHES+=("$1") ;;
        -h | --help) sed -n '2,15p' "$0"; exit 0 ;;
        *) die "unknown argument: $1" ;;
    esac
    shift
done
((${#BENCHES[@]})) || BENCHES=(tftp capture diag storm http)
want() { [[ " ${BENCHES[*]} " == *" $1 "* ]]; }

[[ $(id -u) == 0 ]] || die "run as root (network namespaces, port 69): sudo $0"

# --- packages --------------------------------------------------------------------
PKGS=(dnsmasq-base atftp curl wrk nginx-light iproute2 ipxe procps)
((WITH_TSHARK)) && PKGS+=(tshark linux-perf)
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# nginx-full/-core also provide the nginx binary.
if [[ " ${missing[*]} " == *" nginx-light "* ]] && command -v nginx >/dev/null; then
    missing=("${missing[@]/nginx-light/}")
fi
read -ra missing <<<"${missing[*]}"
if ((${#missing[@]})); then
    log "installing: ${missing[*]}"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- build -----------------------------------------------------------------------
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/pt-bench}
BIN=${PROVISIONER_BIN:-$CARGO_TARGET_DIR/release/provisioner}
if ((BUILD)); then
    if ! command -v cargo >/dev/null; then
        for d in "${SUDO_USER:+$(getent passwd "$SUDO_USER" | cut -d: -f6)/.cargo/bin}" "$HOME/.cargo/bin" /root/.cargo/bin; do
            [[ -n $d && -x $d/cargo ]] && { PATH=$d:$PATH; break; }
        done
    fi
    command -v cargo >/dev/null || die "cargo not found (install rustup, or pass --no-build with PROVISIONER_BIN)"
    log "building release binary into $CARGO_TARGET_DIR"
    (cd "$REPO" && timeout 1800 cargo build --release -p provisioner --quiet)
fi
[[ -x $BIN ]] || die "no binary at $BIN"

# --- run -------------------------------------------------------------------------
mkdir -p "$RESULTS" "$RAW"
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM
( sleep "$MAX_SECONDS"; log "time limit ${MAX_SECONDS}s reached, stopping"; kill -TERM $$ 2>/dev/null ) &
WATCHDOG_PID=$!

{
    echo "date: $(date -u +%FT%TZ)"
    echo "kernel: $(uname -r)"
    echo "cpus: $(nproc) x $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
    echo "memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
    echo "loadavg at start: $(cat /proc/loadavg)"
    echo "repo: $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null)$(git -C "$REPO" diff --quiet 2>/dev/null || echo ' (+ uncommitted changes)')"
    echo "binary: $BIN ($(stat -c %s "$BIN") bytes, release profile)"
    echo "rustc: $(rustc --version 2>/dev/null || echo unknown)"
    echo "dnsmasq: $(dnsmasq --version | head -1)"
    echo "nginx: $(nginx -v 2>&1)"
    echo "curl: $(curl --version | head -1)"
    echo "atftp: $(atftp --version 2>&1 | head -1)"
    echo "wrk: $(wrk --version 2>&1 | head -1)"
    echo "reps: $REPS (storm: $STORM_REPS), http duration: $HTTP_DUR, storm clients: $STORM_N"
} >"$RESULTS/env.txt"

prepare_files
net_up
start_appliance
sleep 3
printf 'when\tprocess\tpid\tVmRSS_kB\tVmHWM_kB\tthreads\n' >"$RESULTS/rss.tsv"
printf 'after_startup\tprovisioner\t%s\t%s\t%s\t%s\n' "$APP_PID" "$(status_kb "$APP_PID" VmRSS)" \
    "$(status_kb "$APP_PID" VmHWM)" "$(status_kb "$APP_PID" Threads)" >>"$RESULTS/rss.tsv"
want tftp || want capture || want diag || want storm && start_dnsmasq
want http && start_nginx

# Benchmarks record failures in their tables instead of aborting the run.
set +e
want tftp && bench_tftp_throughput "$REPS"
want capture && bench_tftp_capture
want diag && bench_tftp_diag
want storm && bench_tftp_storm "$STORM_REPS" "$STORM_N"
want http && bench_http "$REPS" "$HTTP_DUR"
want diag && want http && bench_http_diag

sleep 3
printf 'after_benchmarks\tprovisioner\t%s\t%s\t%s\t%s\n' "$APP_PID" "$(status_kb "$APP_PID" VmRSS)" \
    "$(status_kb "$APP_PID" VmHWM)" "$(status_kb "$APP_PID" Threads)" >>"$RESULTS/rss.tsv"
if [[ -n $DNSMASQ_PID ]]; then
    printf 'after_benchmarks\tdnsmasq\t%s\t%s\t%s\t%s\n' "$DNSMASQ_PID" "$(status_kb "$DNSMASQ_PID" VmRSS)" \
        "$(status_kb "$DNSMASQ_PID" VmHWM)" "$(status_kb "$DNSMASQ_PID" Threads)" >>"$RESULTS/rss.tsv"
fi
if [[ -n $NGINX_PID ]]; then
    rss=0 hwm=0 n=0
    for p in $NGINX_PID $(child_pids "$NGINX_PID"); do
        rss=$((rss + $(status_kb "$p" VmRSS))) hwm=$((hwm + $(status_kb "$p" VmHWM))) n=$((n + 1))
    done
    printf 'after_benchmarks\tnginx (master+workers, summed)\t%s\t%s\t%s\t%s\n' "$NGINX_PID" "$rss" "$hwm" "$n" >>"$RESULTS/rss.tsv"
fi
echo "loadavg at end: $(cat /proc/loadavg)" >>"$RESULTS/env.txt"

if [[ -f $WORK/dnsmasq.log ]]; then
    {
        echo "dnsmasq log lines: $(wc -l <"$WORK/dnsmasq.log")"
        echo "transfers sent: $(grep -c 'dnsmasq-tftp.*: sent ' "$WORK/dnsmasq.log")"
        echo "failed/errors: $(grep -ciE 'failed|error' "$WORK/dnsmasq.log")"
    } >"$RAW/dnsmasq-summary.txt"
fi
"$BENCH_DIR/summarize.sh" "$RESULTS" >"$RESULTS/summary.md"
chmod -R a+rX "$RESULTS"
log "done: $RESULTS/summary.md"
cat "$RESULTS/summary.md"
