#!/usr/bin/env bash
# Every benchmark of issue 16 in one run, as root, on an idle machine or under a fixed
# background load, ~10-12 min on 2 cores (see README.md "all.sh"):
#
#   sudo tests/bench/all.sh --idle        # nothing else should run on the machine
#   sudo tests/bench/all.sh --load        # + LOAD_CMD beside both servers alike
#   options: --no-build (binaries already in CARGO_TARGET_DIR), --quick (few reps:
#            a check of the scripts, not figures), --out DIR
#
# Runs, in order: run.sh (TFTP 32 MiB ws 1 curl + atftp and ws 16 vs dnsmasq, the
# 100-client TFTP storm in both shapes, HTTP 100 MiB × 16 connections vs nginx),
# dhcp/run.sh PHASES=cpu (server CPU per 1,000 DORA vs Kea at fixed rates), and
# dhcp/bootstorm.sh at 500 and 2,000 machines (vs dnsmasq + nginx, peak RSS). Writes
# everything under results/all-<mode>-<UTC time>/ and ONE summary.md there
# (summary_all.sh). A load-average sampler runs throughout (loadavg.tsv).
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/../.." && pwd)
MODE="" BUILD=1 QUICK=0 OUT=""
# The fixed load of --load: two CPU hogs at nice 0, each busy half of the time,
# so both servers and their clients compete with the same extra work.
LOAD_CMD=${LOAD_CMD:-"stress-ng --cpu 2 --cpu-load 50 --cpu-method int64"}
while (($#)); do
    case $1 in
        --idle) MODE=idle ;;
        --load) MODE=load ;;
        --no-build) BUILD=0 ;;
        --quick) QUICK=1 ;;
        --out) OUT=$2; shift ;;
        -h | --help) sed -n '2,15p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done
[[ -n $MODE ]] || { echo "say --idle or --load" >&2; exit 2; }
[[ $(id -u) == 0 ]] || { echo "run as root: sudo $0 --$MODE" >&2; exit 1; }
log() { printf '[all %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

if ((QUICK)); then
    REPS=2 STORM_REPS=3 HTTP_DUR=5s SECS=4 CPU_RATES="2000" STORMS="500"
else
    REPS=5 STORM_REPS=7 HTTP_DUR=20s SECS=10 CPU_RATES="2000 4000 6000" STORMS="500 2000"
fi
OUT=${OUT:-$BENCH_DIR/results/all-$MODE-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"

# Packages: run.sh installs its own; these are the DHCP peers, perfdhcp and the load.
need=()
for p in kea-admin kea-dhcp4-server dnsmasq-base nginx-light stress-ng iproute2; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [[ " ${need[*]} " == *" nginx-light "* ]] && command -v nginx >/dev/null; then need=("${need[@]/nginx-light/}"); fi
read -ra need <<<"${need[*]}"
if ((${#need[@]})); then
    log "installing: ${need[*]}"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
fi
# Kea's package may start its own service; the benchmark starts its own server.
systemctl stop kea-dhcp4-server 2>/dev/null || true

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/pt-bench}
BIN=$CARGO_TARGET_DIR/release/provisioner
if ((BUILD)); then
    if ! command -v cargo >/dev/null; then
        for d in "${SUDO_USER:+$(getent passwd "$SUDO_USER" | cut -d: -f6)/.cargo/bin}" "$HOME/.cargo/bin" /root/.cargo/bin; do
            [[ -n $d && -x $d/cargo ]] && { PATH=$d:$PATH; break; }
        done
    fi
    log "building the release binary and the storm generator into $CARGO_TARGET_DIR"
    # Two commands: a target flag (--example) would limit the first package to it too.
    (cd "$REPO" && timeout 1800 cargo build --release -q -p provisioner && timeout 1800 cargo build --release -q -p provisioner-e2e --example bootstorm)
fi
[[ -x $BIN && -x $CARGO_TARGET_DIR/release/examples/bootstorm ]] || { echo "no release build in $CARGO_TARGET_DIR (drop --no-build)" >&2; exit 1; }

SAMPLER="" LOADER=""
stop_bg() {
    [[ -n $SAMPLER ]] && kill "$SAMPLER" 2>/dev/null
    if [[ -n $LOADER ]]; then
        kill -TERM "$LOADER" 2>/dev/null
        wait "$LOADER" 2>/dev/null
    fi
    SAMPLER="" LOADER=""
}
trap stop_bg EXIT
trap 'log interrupted; exit 130' INT TERM

phase() { echo "$1" >"$OUT/.phase"; log "$1"; }
phase setup
(
    printf 'time\tphase\tload1\n'
    while sleep 5; do printf '%(%H:%M:%S)T\t%s\t%s\n' -1 "$(cat "$OUT/.phase" 2>/dev/null)" "$(cut -d' ' -f1 /proc/loadavg)"; done
) >"$OUT/loadavg.tsv" &
SAMPLER=$!
{
    echo "mode: $MODE$([[ $MODE == load ]] && echo " ($LOAD_CMD)")$( ((QUICK)) && echo ', --quick: a check of the scripts, not figures')"
    echo "date: $(date -u +%FT%TZ)"
    echo "repo: $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null)$(git -C "$REPO" diff --quiet 2>/dev/null || echo ' (+ uncommitted changes)')"
    echo "cpus: $(nproc); loadavg at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "reps: $REPS (storm $STORM_REPS), http $HTTP_DUR, dhcp cpu rates $CPU_RATES × ${SECS}s, boot storms: $STORMS"
} >"$OUT/env.txt"
if [[ $MODE == load ]]; then
    # shellcheck disable=SC2086  # LOAD_CMD is a command line
    $LOAD_CMD >"$OUT/load.log" 2>&1 &
    LOADER=$!
    sleep 5
fi

phase "tftp+storm+http"
BENCH_RESULTS=$OUT/bench "$BENCH_DIR/run.sh" --no-build --reps "$REPS" --storm-reps "$STORM_REPS" \
    --http-duration "$HTTP_DUR" tftp storm http >"$OUT/run.log" 2>&1 || log "run.sh failed: see $OUT/run.log"

phase dhcp-cpu
PHASES=cpu SECS=$SECS CPU_RATES=$CPU_RATES DHCP_OUT=$OUT/dhcp "$BENCH_DIR/dhcp/run.sh" "$BIN" \
    >"$OUT/dhcp.log" 2>&1 || log "dhcp/run.sh failed: see $OUT/dhcp.log"

for n in $STORMS; do
    phase "bootstorm-$n"
    BOOTSTORM_NO_BUILD=1 BOOTSTORM_OUT=$OUT/bootstorm-$n timeout 900 "$BENCH_DIR/dhcp/bootstorm.sh" "$BIN" "$n" \
        >"$OUT/bootstorm-$n.log" 2>&1 || log "bootstorm $n failed: see $OUT/bootstorm-$n.log"
done

phase finished
stop_bg
echo "loadavg at end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/env.txt"
"$BENCH_DIR/summary_all.sh" "$OUT" >"$OUT/summary.md"
rm -f "$OUT/.phase"
chmod -R a+rX "$OUT"
log "done: $OUT/summary.md"
cat "$OUT/summary.md"
