#!/usr/bin/env bash
# A/B of two appliance builds on TFTP, interleaved in one run with dnsmasq as the
# yardstick, so a product change to the TFTP path can be judged on this noisy box:
#
#   sudo tests/bench/ab_tftp.sh BIN_A BIN_B [reps]     (default 9 reps)
#
# A on 10.99.0.1, dnsmasq on 10.99.0.2, B on 10.99.0.3, same veth; every rep fetches the
# 32 MiB file with curl (blksize 1468) from all three in rotating order. Writes
# results/ab_tftp.tsv (or BENCH_RESULTS) and prints medians of MiB/s and server CPU.
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
B_IP=10.99.0.3

mkdir -p "$RESULTS" "$RAW"
trap cleanup EXIT
trap 'exit 130' INT TERM
prepare_files
net_up
in_srv ip addr add "$B_IP/24" dev "$VETH_SRV"
BIN=$BIN_A start_appliance
A_PID=$APP_PID
sed -e "s|$WORK/state|$WORK/state-b|; s|$APP_IP|$B_IP|g; s|127.0.0.1:19091|127.0.0.1:19092|" \
    "$WORK/appliance.yaml" >"$WORK/appliance-b.yaml"
ip netns exec "$NS_SRV" "$BIN_B" serve --config "$WORK/appliance-b.yaml" >"$RAW/appliance-b.log" 2>&1 &
B_PID=$!
BENCH_PIDS+=("$B_PID")
wait_for_log "$RAW/appliance-b.log" "listening for TFTP on" 30 || die "B did not start"
start_dnsmasq
set +e

tsv=$RESULTS/ab_tftp.tsv
printf 'server\trep\tsecs\tbytes\tsha_ok\tcli_tx_pkts\tcli_rx_pkts\tsrv_cpu_ticks\tMiB_per_s\tloadavg\n' >"$tsv"
mkdir -p "$OUT_DIR"
names=(A dnsmasq B) ips=("$APP_IP" "$PEER_IP" "$B_IP") pids=("$A_PID" "$DNSMASQ_PID" "$B_PID")
for i in 0 1 2; do tftp_fetch "${ips[$i]}" big32.bin curl 1 "${pids[$i]}" >/dev/null; done   # warm-up
for rep in $(seq 1 "$REPS"); do
    for k in 0 1 2; do
        i=$(((rep + k) % 3))
        row=$(tftp_fetch "${ips[$i]}" big32.bin curl 1 "${pids[$i]}")
        secs=$(cut -f1 <<<"$row") bytes=$(cut -f2 <<<"$row")
        printf '%s\t%s\t%s\t%s\t%s\n' "${names[$i]}" "$rep" "$row" \
            "$(awk -v b="$bytes" -v s="$secs" 'BEGIN {printf "%.2f", b / 1048576 / s}')" "$(loadavg)" >>"$tsv"
        log "rep $rep ${names[$i]}: $(cut -f1-3 <<<"$row" | tr '\t' ' ')"
    done
done
{
    echo "A = $BIN_A"
    echo "B = $BIN_B"
    for n in A dnsmasq B; do
        m=$(awk -F'\t' -v n="$n" 'NR>1 && $1==n {print $9}' "$tsv" | median)
        c=$(awk -F'\t' -v n="$n" 'NR>1 && $1==n {print $8}' "$tsv" | median)
        ok=$(awk -F'\t' -v n="$n" 'NR>1 && $1==n && $5==1 {o++} NR>1 && $1==n {t++} END {print o"/"t}' "$tsv")
        printf '%-8s median %6.2f MiB/s   server CPU %.2f s/transfer   sha256 ok %s\n' "$n" "$m" "$(awk -v c="$c" 'BEGIN {print c / 100}')" "$ok"
    done
} | tee "$RESULTS/ab_tftp.txt"
