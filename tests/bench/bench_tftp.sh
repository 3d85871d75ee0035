# shellcheck shell=bash
# TFTP benchmarks (sourced by run.sh): single-transfer throughput and the boot storm.

OUT_DIR=/dev/shm/ptbench-out   # client downloads land in RAM, not on disk

# One TFTP download from inside the client namespace; prints one TSV row:
# secs bytes sha_ok cli_tx_pkts cli_rx_pkts srv_cpu_ticks
#   client: curl | atftp ; window: 1 (no option) or N (atftp --option "windowsize N")
tftp_fetch() { # server_ip file client window srv_pid...
    local ip=$1 file=$2 client=$3 window=$4
    shift 4
    local out=$OUT_DIR/$file cmd
    rm -f "$out"
    case $client in
        curl) cmd=(curl -s --max-time 120 --tftp-blksize 1468 -o "$out" "tftp://$ip/$file") ;;
        atftp)
            cmd=(atftp --option "blksize 1468")
            [[ $window -gt 1 ]] && cmd+=(--option "windowsize $window")
            cmd+=(-g -r "$file" -l "$out" "$ip" 69) ;;
        *) die "unknown client $client" ;;
    esac
    local tx0 rx0 c0 t0 t1 tx1 rx1 c1
    tx0=$(cli_counter tx_packets); rx0=$(cli_counter rx_packets); c0=$(cpu_ticks_sum "$@")
    t0=$(now)
    in_cli timeout 120 "${cmd[@]}" >/dev/null 2>&1
    t1=$(now)
    tx1=$(cli_counter tx_packets); rx1=$(cli_counter rx_packets); c1=$(cpu_ticks_sum "$@")
    local bytes=0 ok=0
    [[ -f $out ]] && bytes=$(stat -c %s "$out")
    [[ -f $out && $(sha256sum "$out" | cut -d' ' -f1) == "$SHA_BIG32" ]] && ok=1
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$(elapsed "$t0" "$t1")" "$bytes" "$ok" $((tx1 - tx0)) $((rx1 - rx0)) $((c1 - c0))
}

bench_tftp_throughput() {
    local reps=$1 tsv=$RESULTS/tftp_throughput.tsv
    mkdir -p "$OUT_DIR"
    printf 'server\tclient\twindow\trep\tsecs\tbytes\tsha_ok\tcli_tx_pkts\tcli_rx_pkts\tsrv_cpu_ticks\tMiB_per_s\tloadavg\n' >"$tsv"
    log "TFTP throughput: 32 MiB, blksize 1468, $reps reps per cell (warm-up first)"
    # Warm-up (not recorded): page cache, the appliance's in-memory file cache, ARP.
    tftp_fetch "$APP_IP" big32.bin curl 1 "$APP_PID" >/dev/null
    tftp_fetch "$PEER_IP" big32.bin curl 1 "$DNSMASQ_PID" >/dev/null
    local rep row srv ip pid cell client window
    for rep in $(seq 1 "$reps"); do
        # Alternate the order every rep so drift in the shared machine's load hits both.
        local order=(appliance dnsmasq)
        ((rep % 2 == 0)) && order=(dnsmasq appliance)
        for cell in curl:1 atftp:1 atftp:16; do
            client=${cell%%:*} window=${cell##*:}
            for srv in "${order[@]}"; do
                # dnsmasq has no windowsize (RFC 7440): that cell is the appliance's only.
                [[ $srv == dnsmasq && $window -gt 1 ]] && continue
                if [[ $srv == appliance ]]; then ip=$APP_IP pid=$APP_PID; else ip=$PEER_IP pid=$DNSMASQ_PID; fi
                row=$(tftp_fetch "$ip" big32.bin "$client" "$window" "$pid")
                local secs bytes
                secs=$(cut -f1 <<<"$row") bytes=$(cut -f2 <<<"$row")
                printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$srv" "$client" "$window" "$rep" "$row" \
                    "$(awk -v b="$bytes" -v s="$secs" 'BEGIN {printf "%.2f", b / 1048576 / s}')" "$(loadavg)" >>"$tsv"
                log "  rep $rep $srv $client ws$window: $(cut -f1-4 <<<"$row" | tr '\t' ' ')"
            done
        done
    done
    rm -rf "$OUT_DIR"
}

# Packet-level evidence for the windowsize claim: one capture per window size, from the
# client's veth. Needs tshark; skipped (with a note) when it is not installed.
bench_tftp_capture() {
    local f=$RESULTS/tftp_windowsize_capture.txt
    if ! command -v tshark >/dev/null; then
        echo "tshark not installed: capture skipped (counters in tftp_throughput.tsv still apply)" >"$f"
        return 0
    fi
    mkdir -p "$OUT_DIR"
    : >"$f"
    local w pcap cap_pid
    for w in 1 16; do
        pcap=$WORK/ws$w.pcap
        rm -f "$pcap"
        # Not via in_cli: $! must be timeout(1) itself, which passes SIGINT on to tshark.
        ip netns exec "$NS_CLI" timeout 120 tshark -q -i "$VETH_CLI" -s 96 -w "$pcap" -f "udp and host $APP_IP" >/dev/null 2>&1 &
        cap_pid=$!
        sleep 2
        tftp_fetch "$APP_IP" big32.bin atftp "$w" "$APP_PID" >/dev/null
        sleep 1
        kill -INT "$cap_pid" 2>/dev/null; wait "$cap_pid" 2>/dev/null || true
        {
            echo "== atftp blksize 1468 windowsize $w, appliance $APP_IP, capture on $VETH_CLI"
            echo -n "client->server packets (RRQ + ACKs): "
            tshark -r "$pcap" -Y "ip.src==$CLI_IP" 2>/dev/null | wc -l
            echo -n "server->client packets (OACK + DATA): "
            tshark -r "$pcap" -Y "ip.src==$APP_IP" 2>/dev/null | wc -l
            echo -n "client packets with TFTP opcode 4 (ACK), decoded via udp.payload: "
            tshark -r "$pcap" -Y "ip.src==$CLI_IP && udp.payload[0:2]==00:04" 2>/dev/null | wc -l
        } >>"$f"
    done
    rm -rf "$OUT_DIR"
}

# 100 concurrent clients fetch snponly.efi; wall time until the last one finishes.
#   mode procs:    100 separate curl processes (like 100 machines; includes curl start-up)
#   mode parallel: one curl process, --parallel --parallel-max 100 (client overhead minimal)
storm_once() { # server_ip n mode -> "secs ok failed p50 max"
    local ip=$1 n=$2 mode=$3 d=$OUT_DIR/storm
    rm -rf "$d"; mkdir -p "$d"
    local t0 t1
    if [[ $mode == procs ]]; then
        t0=$(now)
        # shellcheck disable=SC2016  # $i expands in the inner shell
        in_cli timeout 120 bash -c '
            for i in $(seq 1 '"$n"'); do
                curl -s --max-time 90 --tftp-blksize 1468 -o "'"$d"'/$i" -w "%{time_total}\n" \
                    "tftp://'"$ip"'/snponly.efi" >"'"$d"'/$i.t" 2>/dev/null &
            done
            wait'
        t1=$(now)
    else
        local args=() i
        for i in $(seq 1 "$n"); do args+=(-o "$d/$i" "tftp://$ip/snponly.efi"); done
        t0=$(now)
        in_cli timeout 120 curl -s --max-time 90 --tftp-blksize 1468 --parallel --parallel-immediate \
            --parallel-max "$n" -w "%{time_total}\n" "${args[@]}" >"$d/all.t" 2>/dev/null
        t1=$(now)
    fi
    local ok=0 f
    for i in $(seq 1 "$n"); do
        f=$d/$i
        [[ -f $f && $(stat -c %s "$f") == "$SIZE_SNP" && $(sha256sum "$f" | cut -d' ' -f1) == "$SHA_SNP" ]] && ok=$((ok + 1))
    done
    local times
    times=$(cat "$d"/*.t 2>/dev/null | grep -E '^[0-9.]+$')
    printf '%s\t%s\t%s\t%s\t%s\n' "$(elapsed "$t0" "$t1")" "$ok" $((n - ok)) \
        "$(median <<<"$times")" "$(sort -g <<<"$times" | tail -1)"
}

bench_tftp_storm() {
    local reps=$1 n=${2:-100} tsv=$RESULTS/tftp_storm.tsv
    mkdir -p "$OUT_DIR"
    printf 'server\tmode\trep\twall_secs\tok\tfailed\tclient_p50_secs\tclient_max_secs\tsrv_cpu_ticks\tloadavg\n' >"$tsv"
    log "TFTP boot storm: $n concurrent fetches of snponly.efi ($SIZE_SNP bytes), $reps reps"
    storm_once "$APP_IP" 10 parallel >/dev/null   # warm-up
    storm_once "$PEER_IP" 10 parallel >/dev/null
    local rep srv ip pid mode row c0 c1
    for rep in $(seq 1 "$reps"); do
        local order=(appliance dnsmasq)
        ((rep % 2 == 0)) && order=(dnsmasq appliance)
        for mode in procs parallel; do
            for srv in "${order[@]}"; do
                if [[ $srv == appliance ]]; then ip=$APP_IP pid=$APP_PID; else ip=$PEER_IP pid=$DNSMASQ_PID; fi
                c0=$(cpu_ticks "$pid")
                row=$(storm_once "$ip" "$n" "$mode")
                c1=$(cpu_ticks "$pid")
                printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$srv" "$mode" "$rep" "$row" $((c1 - c0)) "$(loadavg)" >>"$tsv"
                log "  rep $rep $srv $mode: $(tr '\t' ' ' <<<"$row")"
            done
        done
    done
    rm -rf "$OUT_DIR"
}

# Syscall and context-switch counts of each server for one 32 MiB transfer (curl,
# blksize 1468): where the per-block cost goes. Uses perf's syscall tracepoints,
# which (unlike strace) do not slow the server enough to change its behaviour.
bench_tftp_diag() {
    local f=$RESULTS/tftp_syscalls.txt
    if ! command -v perf >/dev/null || ! perf stat -e syscalls:sys_enter_sendto -- true >/dev/null 2>&1; then
        echo "perf (linux-perf) with syscall tracepoints not available: diagnosis skipped" >"$f"
        return 0
    fi
    mkdir -p "$OUT_DIR"
    local ev="task-clock,context-switches" s
    for s in sendto sendmsg sendmmsg writev recvfrom recvmsg poll epoll_wait epoll_pwait epoll_ctl futex read write pread64 lseek timerfd_settime; do
        ev+=",syscalls:sys_enter_$s"
    done
    : >"$f"
    local rep srv ip pid
    for rep in 1 2 3; do
        for srv in appliance dnsmasq; do
            if [[ $srv == appliance ]]; then ip=$APP_IP pid=$APP_PID; else ip=$PEER_IP pid=$DNSMASQ_PID; fi
            echo "== $srv, rep $rep: one 32 MiB transfer (22857 blocks), curl --tftp-blksize 1468" >>"$f"
            perf stat -x, -e "$ev" -p "$pid" -- ip netns exec "$NS_CLI" timeout 120 \
                curl -s --tftp-blksize 1468 -o "$OUT_DIR/diag" "tftp://$ip/big32.bin" 2>&1 >/dev/null |
                awk -F, '$1 ~ /^[0-9.]+$/ {printf "%12s  %s\n", $1, $3}' >>"$f"
        done
    done
    # Threads of the appliance (the engine's reactor runs on its own thread).
    echo "== appliance threads" >>"$f"
    for t in /proc/"$APP_PID"/task/*; do echo "$(basename "$t") $(cat "$t/comm")"; done >>"$f"
    rm -rf "$OUT_DIR"
}
