#!/usr/bin/env bash
# shellcheck disable=SC2016  # awk filters are single-quoted on purpose
# The one table of an all.sh run: for every benchmark the appliance's figure, the
# peer's, their ratio, the CPU per unit of work of both beside it, and the load
# average while it ran.
#   tests/bench/summary_all.sh results/all-<mode>-<time> > summary.md
set -uo pipefail
R=${1:?results dir of all.sh}

# med FILE FILTER COLUMN: median of COLUMN over the rows matching FILTER (header row 1).
med() {
    [[ -f $1 ]] || { echo n/a; return; }
    awk -F'\t' -v col="$3" '
        NR == 1 { for (i = 1; i <= NF; i++) idx[$i] = i; next }
        '"$2"' { print $idx[col] }' "$1" | sort -g |
        awk '{a[NR]=$1} END {if (!NR) {print "n/a"; exit} if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'
}
# calc EXPR over named values, "n/a" when any is n/a or a division by zero looms.
calc() {
    local expr=$1; shift
    awk -v e="$expr" 'BEGIN {
        for (i = 1; i < ARGC; i++) { split(ARGV[i], kv, "="); if (kv[2] == "n/a" || kv[2] == "") { print "n/a"; exit } v[kv[1]] = kv[2] + 0 }
        if (e == "a/b") { if (v["b"] == 0) print "n/a"; else printf "%.2f", v["a"] / v["b"] }
        else if (e == "t/100") printf "%.3f", v["t"] / 100
        else if (e == "t/100/g") { if (v["g"] == 0) print "n/a"; else printf "%.3f", v["t"] / 100 / v["g"] }
        else if (e == "x") printf "%.2f", v["x"]
        else if (e == "x0") printf "%.0f", v["x"]
        else if (e == "x1") printf "%.1f", v["x"]
        exit }' "$@"
}
cpg() { # http.tsv server -> server CPU s per GiB (median over reps)
    [[ -f $1 ]] || { echo n/a; return; }
    awk -F'\t' -v s="$2" 'NR > 1 && $1 == s && $4 > 0 {print $10 / 100 / ($4 / 1073741824)}' "$1" | sort -g |
        awk '{a[NR]=$1} END {if (!NR) {print "n/a"; exit} if (NR%2) printf "%.3f\n", a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2}'
}
row() { # benchmark app peer ratio app_cpu peer_cpu unit load target
    local cr
    cr=$(calc a/b "a=$6" "b=$5")
    echo "| $1 | $2 | $3 | **$4** | $5 | $6 | $cr | $8 | $9 |"
}

echo "# Benchmarks of issue 16: one run of \`tests/bench/all.sh\`"
echo
echo "Ratios: higher is better for the appliance (throughput appliance ÷ peer, time and CPU"
echo "peer ÷ appliance). CPU is the server's whole-process utime+stime (/proc) per unit of"
echo "work; \"load\" is the median 1-minute load average over the rows' repetitions."
echo "Method and caveats: [README.md](../../README.md) (\`tests/bench/README.md\`)."
echo
echo '```'
cat "$R/env.txt" 2>/dev/null
echo '```'
echo
echo "| benchmark | appliance | peer | ratio | appliance CPU | peer CPU | CPU ratio | load | target |"
echo "|---|---|---|---|---|---|---|---|---|"

T=$R/bench/tftp_throughput.tsv
for c in curl atftp; do
    f1="\$2==\"$c\" && \$3==1 && \$1==\"appliance\"" f2="\$2==\"$c\" && \$3==1 && \$1==\"dnsmasq\""
    a=$(med "$T" "$f1" MiB_per_s) d=$(med "$T" "$f2" MiB_per_s)
    row "TFTP 32 MiB, blksize 1468, ws 1, $c (MiB/s; CPU s per transfer)" "$(calc x x="$a")" "dnsmasq $(calc x x="$d")" \
        "$(calc a/b a="$a" b="$d")" "$(calc t/100 t="$(med "$T" "$f1" srv_cpu_ticks)")" \
        "$(calc t/100 t="$(med "$T" "$f2" srv_cpu_ticks)")" "" "$(med "$T" "\$2==\"$c\" && \$3==1" loadavg)" "≥ 1.2, CPU ≤ dnsmasq"
done
f1='$1=="appliance" && $2=="atftp" && $3==16' f2='$1=="dnsmasq" && $2=="atftp" && $3==1'
a=$(med "$T" "$f1" MiB_per_s) d=$(med "$T" "$f2" MiB_per_s)
row "TFTP 32 MiB, atftp, appliance ws 16 vs dnsmasq (no RFC 7440) ws 1" "$(calc x x="$a")" "dnsmasq $(calc x x="$d")" \
    "$(calc a/b a="$a" b="$d")" "$(calc t/100 t="$(med "$T" "$f1" srv_cpu_ticks)")" \
    "$(calc t/100 t="$(med "$T" "$f2" srv_cpu_ticks)")" "" "$(med "$T" "\$2==\"atftp\"" loadavg)" "report (≈ 7×)"

S=$R/bench/tftp_storm.tsv
for m in procs parallel; do
    f1="\$1==\"appliance\" && \$2==\"$m\"" f2="\$1==\"dnsmasq\" && \$2==\"$m\""
    a=$(med "$S" "$f1" wall_secs) d=$(med "$S" "$f2" wall_secs)
    bad=$([[ -f $S ]] && awk -F'\t' -v m="$m" 'NR>1 && $2==m {b+=$6} END {print b+0}' "$S" || echo n/a)
    label=$([[ $m == procs ]] && echo "100 curl processes" || echo "1 curl --parallel 100")
    row "TFTP storm, $label (s; CPU s per 100 transfers; $bad failed)" "$(calc x x="$a")" "dnsmasq $(calc x x="$d")" \
        "$(calc a/b a="$d" b="$a")" "$(calc t/100 t="$(med "$S" "$f1" srv_cpu_ticks)")" \
        "$(calc t/100 t="$(med "$S" "$f2" srv_cpu_ticks)")" "" "$(med "$S" "\$2==\"$m\"" loadavg)" "time ≤ 0.8× (ratio ≥ 1.25), all intact"
done

H=$R/bench/http.tsv
a=$(med "$H" '$1=="appliance"' MiB_per_s) n=$(med "$H" '$1=="nginx"' MiB_per_s)
row "HTTP 100 MiB × 16 connections (MiB/s; CPU s per GiB)" "$(calc x1 x="$a")" "nginx $(calc x1 x="$n")" \
    "$(calc a/b a="$a" b="$n")" "$(cpg "$H" appliance)" "$(cpg "$H" nginx)" "" "$(med "$H" 'NR>1' loadavg)" "≥ 1.0, CPU ≤ 1.5× nginx"

D=$R/dhcp/dhcp_cpu.tsv
if [[ -f $D ]]; then
    for r in $(awk -F'\t' 'NR>1 {print $2}' "$D" | sort -un); do
        fa="\$1==\"appliance\" && \$2==$r" fk="\$1==\"kea\" && \$2==$r"
        a=$(med "$D" "$fa" achieved_per_s) k=$(med "$D" "$fk" achieved_per_s)
        row "DHCP DORA at $r/s offered (DORA/s; CPU ms per 1,000 DORA)" "$(calc x0 x="$a")" "Kea $(calc x0 x="$k")" \
            "$(calc a/b a="$a" b="$k")" "$(med "$D" "$fa" ms_per_1000)" "$(med "$D" "$fk" ms_per_1000)" "" \
            "$(med "$D" "\$2==$r" loadavg)" "CPU ≤ Kea's"
    done
fi

for B in "$R"/bootstorm-*/bootstorm.tsv; do
    [[ -f $B ]] || continue
    fa='$1=="appliance"' fp='$1=="dnsmasq+nginx"'
    n=$(med "$B" "$fa" machines)
    a=$(med "$B" "$fa" seconds) p=$(med "$B" "$fp" seconds)
    ok_a=$(med "$B" "$fa" ok) ok_p=$(med "$B" "$fp" ok)
    rtx=$(med "$B" "$fa" tftp_retransmits)
    rss=$(awk -F'\t' 'NR>1 && $1=="appliance" {printf "%.0f", $7/1024}' "$B")
    prss=$(awk -F'\t' 'NR>1 && $1=="dnsmasq+nginx" {printf "%.0f", $7/1024}' "$B")
    limit=$([[ $n == 500 ]] && echo 150 || echo 300)
    row "boot storm, $n machines (s, booted, TFTP retransmits, peak RSS; CPU s per storm)" \
        "$(calc x1 x="$a"), $ok_a/$n, $rtx rtx, $rss MiB" "dnsmasq+nginx $(calc x1 x="$p"), $ok_p/$n, $prss MiB" \
        "$(calc a/b a="$p" b="$a")" "$(calc t/100 t="$(med "$B" "$fa" cpu_ticks)")" "$(calc t/100 t="$(med "$B" "$fp" cpu_ticks)")" "" \
        "$(med "$B" 'NR>1' loadavg)" "all booted, 0 rtx, time ≤ peers, RSS < $limit MiB"
done

L=$R/loadavg.tsv
if [[ -f $L ]]; then
    echo
    echo "Load average (1 min) sampled every 5 s, per phase: median (min-max)"
    echo
    awk -F'\t' 'NR > 1 {print $2 "\t" $3}' "$L" | sort -t$'\t' -k1,1 -k2,2g |
        awk -F'\t' '{v[$1] = v[$1] " " $2; n[$1]++}
            END {for (p in v) {split(substr(v[p], 2), a, " "); m = n[p]; printf "- %s: %s (%s-%s)\n", p, (m % 2 ? a[(m+1)/2] : (a[m/2] + a[m/2+1]) / 2), a[1], a[m]}}' | sort
fi
echo
echo "Raw: \`bench/\` (run.sh tables and summary), \`dhcp/\` (perfdhcp output, dhcp_cpu.tsv),"
echo "\`bootstorm-*/\` (generator output, bootstorm.tsv), \`loadavg.tsv\`, logs \`*.log\`."
