# shellcheck shell=bash
# HTTP benchmark (sourced by run.sh): one 100 MiB asset to 16 connections with wrk,
# the appliance's /assets/<image>/<file> vs nginx (sendfile on) on the same file.

bench_http() {
    local reps=$1 dur=${2:-20s} tsv=$RESULTS/http.tsv
    local app_url="http://$APP_IP:$HTTP_PORT/assets/bench/big100.bin"
    local ngx_url="http://$PEER_IP:$HTTP_PORT/assets/bench/big100.bin"
    printf 'server\trep\trequests\tbytes\tduration_s\treq_per_s\tbytes_per_s\tMiB_per_s\terrors\tsrv_cpu_ticks\tloadavg\twrk_cpu_s\n' >"$tsv"
    log "HTTP: 100 MiB asset, wrk -t2 -c16 -d$dur, $reps reps"
    # Correctness first: both serve the same bytes.
    local u
    for u in "$app_url" "$ngx_url"; do
        local got
        got=$(in_cli timeout 60 curl -sf "$u" | sha256sum | cut -d' ' -f1)
        [[ $got == "$SHA_BIG100" ]] || die "wrong body from $u"
    done
    local rep srv url pids out c0 c1
    for rep in $(seq 1 "$reps"); do
        local order=(appliance nginx)
        ((rep % 2 == 0)) && order=(nginx appliance)
        for srv in "${order[@]}"; do
            if [[ $srv == appliance ]]; then url=$app_url pids=("$APP_PID")
            else url=$ngx_url; read -ra pids <<<"$NGINX_PID $(child_pids "$NGINX_PID")"; fi
            out=$RAW/wrk-$srv-$rep.txt
            c0=$(cpu_ticks_sum "${pids[@]}")
            # `times` prints the shell's children's (wrk's) user and system CPU time.
            in_cli timeout 120 bash -c 'wrk "$@"; times' wrk -t2 -c16 -d"$dur" --timeout 60s --latency \
                -s "$BENCH_DIR/wrk_report.lua" "$url" >"$out" 2>&1
            c1=$(cpu_ticks_sum "${pids[@]}")
            local wrk_cpu
            wrk_cpu=$(tail -1 "$out" | awk '{ for (i = 1; i <= 2; i++) { split($i, p, /[ms]/); t += p[1] * 60 + p[2] } printf "%.2f", t }')
            awk -v srv="$srv" -v rep="$rep" -v cpu=$((c1 - c0)) -v load="$(loadavg)" -v wcpu="$wrk_cpu" '
                /^BENCH / {
                    for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
                    d = v["duration_us"] / 1e6
                    err = v["connect_err"] + v["read_err"] + v["write_err"] + v["status_err"] + v["timeout_err"]
                    printf "%s\t%s\t%d\t%.0f\t%.3f\t%.2f\t%.0f\t%.1f\t%d\t%d\t%s\t%s\n", srv, rep, v["requests"], v["bytes"], d,
                        v["requests"] / d, v["bytes"] / d, v["bytes"] / d / 1048576, err, cpu, load, wcpu
                }' "$out" >>"$tsv"
            log "  rep $rep $srv: $(tail -1 "$tsv" | cut -f3-9 | tr '\t' ' ')"
        done
    done
}

# Why the two servers differ on this box: perf counters of the client (wrk) and of the
# server for one 10 s run each. On a 2-core machine shared by client and server the
# client's cost per byte bounds the throughput; this shows that cost per server.
# shellcheck disable=SC2129
bench_http_diag() {
    local f=$RESULTS/http_perf.txt
    if ! command -v perf >/dev/null || ! perf stat -e syscalls:sys_enter_read -- true >/dev/null 2>&1; then
        echo "perf (linux-perf) with syscall tracepoints not available: diagnosis skipped" >"$f"
        return 0
    fi
    : >"$f"
    local srv url pids wev sev
    wev="task-clock,context-switches,cycles,instructions,cache-misses,syscalls:sys_enter_read"
    sev="task-clock,context-switches"
    local s
    for s in read pread64 write writev sendfile64 futex epoll_wait epoll_ctl; do sev+=",syscalls:sys_enter_$s"; done
    for srv in appliance nginx; do
        if [[ $srv == appliance ]]; then url=http://$APP_IP:$HTTP_PORT/assets/bench/big100.bin pids=$APP_PID
        else url=http://$PEER_IP:$HTTP_PORT/assets/bench/big100.bin pids=$(child_pids "$NGINX_PID" | tr ' ' ','); pids=${pids%,}; fi
        {
            echo "== $srv: wrk -t2 -c16 -d10s; server pids $pids"
            echo "-- server (perf stat -p)"
        } >>"$f"
        perf stat -x, -e "$sev" -p "$pids" -o "$WORK/srv.perf" -- \
            perf stat -x, -e "$wev" -o "$WORK/cli.perf" -- \
            ip netns exec "$NS_CLI" timeout 60 wrk -t2 -c16 -d10s --timeout 60s -s "$BENCH_DIR/wrk_report.lua" "$url" \
            >"$WORK/wrk.out" 2>&1
        awk -F, '$1 ~ /^[0-9.]+$/ {printf "%14s  %s\n", $1, $3}' "$WORK/srv.perf" >>"$f"
        echo "-- client (wrk, perf stat)" >>"$f"
        awk -F, '$1 ~ /^[0-9.]+$/ {printf "%14s  %s\n", $1, $3}' "$WORK/cli.perf" >>"$f"
        grep '^BENCH' "$WORK/wrk.out" >>"$f"
    done
}
