#!/usr/bin/env bash
# A/B of appliance builds on TFTP, interleaved in one run with dnsmasq as the
# yardstick, so a product change to the TFTP path can be judged on this noisy box:
#
#   sudo tests/bench/ab_tftp.sh BIN_A BIN_B [reps]     (default 9 reps)
#
# A on 10.99.0.1, dnsmasq on 10.99.0.2, B on 10.99.0.3, same veth; every rep fetches the
# 32 MiB file (blksize 1468, windowsize 1) from every server in rotating order.
# Optional environment:
#   AB_CLIENTS="curl atftp"   clients per rep (default curl)
#   AB_VARIANTS="max_send_retries: 3;timeout_secs: 1"   run BIN_B once per entry, each with
#       the entry added to its `tftp:` settings (B1 on 10.99.0.3, B2 on .4, ...);
#       without it one B with A's settings.
#   AB_PERF=1   after the reps, one curl transfer per server under `perf stat` (task
#       clock, context switches, recvfrom and epoll_wait/poll calls): how often each
#       server polls and how often it sleeps, per block (results/ab_tftp_perf.txt).
# Writes results/ab_tftp.tsv (or BENCH_RESULTS) and prints medians of MiB/s and server
# CPU per transfer, per server and client.
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
source "$BENCH_DIR/lib.sh"
# shellcheck source=bench_tftp.sh
source "$BENCH_DIR/bench_tftp.sh"

[[ $(id -u) == 0 ]] || die "run as root"
(($# >= 2)) || die "usage: $0 BIN_A BIN_B [reps]"
BIN_A=$1 BIN_B=$2 REPS=${3:-9}
[[ -x $BIN_A && -x $BIN_B ]] || die "binaries must exist"
read -r -a CLIENTS <<<"${AB_CLIENTS:-curl}"
VARIANTS=()
[[ -n ${AB_VARIANTS:-} ]] && IFS=';' read -r -a VARIANTS <<<"$AB_VARIANTS"

mkdir -p "$RESULTS" "$RAW"
trap cleanup EXIT
trap 'exit 130' INT TERM
prepare_files
net_up
BIN=$BIN_A start_appliance
names=(A dnsmasq) ips=("$APP_IP" "$PEER_IP") pids=("$APP_PID" "")   # dnsmasq starts last

# One B: BIN_B at 10.99.0.$((3 + k)) with `extra` added to A's tftp settings.
start_b() { # k name extra
    local k=$1 name=$2 extra=$3 ip=10.99.0.$((3 + $1)) cfg
    cfg=$WORK/appliance-$name.yaml
    in_srv ip addr add "$ip/24" dev "$VETH_SRV"
    sed -e "s|$WORK/state|$WORK/state-$name|; s|$APP_IP|$ip|g; s|127.0.0.1:19091|127.0.0.1:$((19092 + k))|" \
        -e "s|^tftp: { \(.*\) }$|tftp: { \1${extra:+, $extra} }|" "$WORK/appliance.yaml" >"$cfg"
    ip netns exec "$NS_SRV" "$BIN_B" serve --config "$cfg" >"$RAW/appliance-$name.log" 2>&1 &
    BENCH_PIDS+=("$!")
    names+=("$name") ips+=("$ip") pids+=("$!")
    wait_for_log "$RAW/appliance-$name.log" "listening for TFTP on" 30 || die "$name did not start"
    log "$name ($extra) pid $! ready on $ip"
}
if ((${#VARIANTS[@]} == 0)); then
    start_b 0 B ""
else
    for k in "${!VARIANTS[@]}"; do start_b "$k" "B$((k + 1))" "${VARIANTS[$k]}"; done
fi
start_dnsmasq
pids[1]=$DNSMASQ_PID
set +e

tsv=$RESULTS/ab_tftp.tsv
printf 'server\tclient\trep\tsecs\tbytes\tsha_ok\tcli_tx_pkts\tcli_rx_pkts\tsrv_cpu_ticks\tMiB_per_s\tloadavg\n' >"$tsv"
mkdir -p "$OUT_DIR"
n=${#names[@]}
for ((i = 0; i < n; i++)); do tftp_fetch "${ips[$i]}" big32.bin curl 1 "${pids[$i]}" >/dev/null; done   # warm-up
for rep in $(seq 1 "$REPS"); do
    for c in "${CLIENTS[@]}"; do
        for ((k = 0; k < n; k++)); do
            i=$(((rep + k) % n))
            row=$(tftp_fetch "${ips[$i]}" big32.bin "$c" 1 "${pids[$i]}")
            secs=$(cut -f1 <<<"$row") bytes=$(cut -f2 <<<"$row")
            printf '%s\t%s\t%s\t%s\t%s\t%s\n' "${names[$i]}" "$c" "$rep" "$row" \
                "$(awk -v b="$bytes" -v s="$secs" 'BEGIN {printf "%.2f", b / 1048576 / s}')" "$(loadavg)" >>"$tsv"
            log "rep $rep ${names[$i]} $c: $(cut -f1-3 <<<"$row" | tr '\t' ' ')"
        done
    done
done
{
    echo "A = $BIN_A"
    echo "B = $BIN_B"
    for k in "${!VARIANTS[@]}"; do echo "B$((k + 1)): tftp + { ${VARIANTS[$k]} }"; done
    echo "load average (1 min) over the rows: median $(awk -F'\t' 'NR>1 {print $11}' "$tsv" | median), range $(awk -F'\t' 'NR>1 {print $11}' "$tsv" | sort -g | sed -n '1p;$p' | tr '\n' ' ')"
    for c in "${CLIENTS[@]}"; do
        for name in "${names[@]}"; do
            sel() { awk -F'\t' -v n="$name" -v c="$c" -v f="$1" 'NR>1 && $1==n && $2==c {print $f}' "$tsv"; }
            m=$(sel 10 | median) t=$(sel 9 | median)
            ok=$(awk -F'\t' -v n="$name" -v c="$c" 'NR>1 && $1==n && $2==c && $6==1 {o++} NR>1 && $1==n && $2==c {t++} END {print o+0"/"t}' "$tsv")
            printf '%-6s %-8s median %6.2f MiB/s   server CPU %.2f s/transfer   sha256 ok %s\n' \
                "$c" "$name" "$m" "$(awk -v c="$t" 'BEGIN {print c / 100}')" "$ok"
        done
    done
} | tee "$RESULTS/ab_tftp.txt"

if [[ ${AB_PERF:-0} == 1 ]] && command -v perf >/dev/null; then
    ev=task-clock,context-switches,cpu-migrations
    for sc in recvfrom recvmsg epoll_wait epoll_pwait poll writev sendto; do ev+=",syscalls:sys_enter_$sc"; done
    for ((i = 0; i < n; i++)); do
        echo "== ${names[$i]}: one 32 MiB transfer (22857 blocks), curl --tftp-blksize 1468, load $(loadavg)"
        perf stat -x, -e "$ev" -p "${pids[$i]}" -- ip netns exec "$NS_CLI" timeout 120 \
            curl -s --tftp-blksize 1468 -o "$OUT_DIR/perf" -w '%{time_total} s\n' "tftp://${ips[$i]}/big32.bin" 2>&1 |
            awk -F, '$1 ~ /^[0-9.]+$/ && NF > 2 {printf "%14s  %s\n", $1, $3; next} {print "  " $0}'
    done | tee "$RESULTS/ab_tftp_perf.txt"
fi
