#!/bin/bash
# bench/msg.sh - the per-message path of one process (-w 1), for one or
# more kurir binaries (e.g. the tree before a change and after it):
#   instr   instructions per message under callgrind: for each script and
#           generator mode, two runs (1,000 and 6,000 messages of
#           loadgen -c 50), the difference of the totals / 5,000
#   cpu     server CPU (utime+stime from /proc) per message of
#           bench/hooks.lua, ROUNDS rounds alternating the binaries and
#           smtp-sink (if installed), after a warm-up of 2,000 messages
# Usage: bash bench/msg.sh [KURIR_BIN...]   (default: build/kurir)
# Env: MSG_SECTIONS ("instr cpu"), MSG_SCRIPTS ("hooks discard": files in
# bench/), MSG_P ("20 1": loadgen -p, 20 pipelined transactions per write
# or lock-step), MSG_N (100000 messages per cpu run), MSG_ROUNDS (3),
# LOADGEN_BIN.
set -euo pipefail
BENCH_NAME=msg
cd "$(dirname "$0")/.."
. bench/lib.sh

SECTIONS=" ${MSG_SECTIONS:-instr cpu} "
SCRIPTS=${MSG_SCRIPTS:-hooks discard}
PS=${MSG_P:-20 1}
N=${MSG_N:-100000}
ROUNDS=${MSG_ROUNDS:-3}
LOADGEN=${LOADGEN_BIN:-$PWD/build/loadgen}
bench_bins "$@"
for s in $SCRIPTS; do [[ -f bench/$s.lua ]] || die "no bench/$s.lua"; done

if [[ $SECTIONS == *" instr "* ]]; then
    command -v valgrind >/dev/null || die "valgrind is not installed"
    echo "instructions per message (callgrind, -w 1, loadgen -c 50):"
    for s in $SCRIPTS; do
        for p in $PS; do
            for b in "${bins[@]}"; do
                printf '  %-8s -p %-3s %-40s %7d\n' "$s" "$p" "$b" "$(callgrind_per "$b" "bench/$s.lua" -c 50 -p "$p")"
            done
        done
    done
fi

if [[ $SECTIONS == *" cpu "* ]]; then
    targets=("${bins[@]}")
    [[ -x /usr/sbin/smtp-sink ]] && targets+=(smtp-sink)
    hz=$(getconf CLK_TCK)
    for p in $PS; do
        echo "server CPU per message, bench/hooks.lua (loadgen -c 50 -n $N -p $p), $ROUNDS rounds:"
        for ((r = 1; r <= ROUNDS; r++)); do
            for t in "${targets[@]}"; do
                port=$(free_port)
                if [[ $t == smtp-sink ]]; then
                    /usr/sbin/smtp-sink -u nobody "127.0.0.1:$port" 4096 &
                else
                    "$t" -w 1 -l "127.0.0.1:$port" bench/hooks.lua >/dev/null 2>"$tmp/k.err" &
                fi
                pid=$!
                pids+=("$pid")
                wait_port "$pid" "$port"
                "$LOADGEN" -c 50 -n 2000 -p "$p" -t 60 "127.0.0.1:$port" >/dev/null   # warm up
                c0=$(cpu_ticks "$pid")
                out=$(timeout 300 "$LOADGEN" -c 50 -n "$N" -p "$p" -t 240 "127.0.0.1:$port")
                c1=$(cpu_ticks "$pid")
                stop_pid "$pid"
                rate=$(sed -n 's/.*\bmsgs_per_s=\([0-9]*\).*/\1/p' <<<"$out")
                awk -v t="$t" -v r="$r" -v c=$((c1 - c0)) -v n="$N" -v hz="$hz" -v rate="${rate:-0}" \
                    'BEGIN { printf "  round %d %-40s %6.2f us/msg  %7d msg/s\n", r, t, c * 1e6 / hz / n, rate }'
            done
        done
    done
fi
