#!/bin/bash
# bench/conn.sh - the per-connection path of one process (-w 1), one
# message per connection (loadgen -r 1), for one or more kurir binaries
# (e.g. the tree before a change and after it):
#   instr   instructions per connection under callgrind: two runs (1,000
#           and 6,000 connections), the difference of the totals / 5,000
#   cpu     server CPU (utime+stime from /proc) per connection, ROUNDS
#           rounds alternating the binaries and smtp-sink (if installed)
#   idle    new connections/s and CPU per connection while IDLE idle
#           connections stay open (accept under load: per-IP counting)
# Usage: bash bench/conn.sh [KURIR_BIN...]   (default: build/kurir)
# Env: CONN_SECTIONS ("instr cpu idle"), CONN_N (20000 connections for cpu),
# CONN_IDLE (10000), CONN_IDLE_N (5000), CONN_ROUNDS (3), LOADGEN_BIN.
set -euo pipefail
BENCH_NAME=conn
cd "$(dirname "$0")/.."
. bench/lib.sh

SECTIONS=" ${CONN_SECTIONS:-instr cpu idle} "
N=${CONN_N:-20000}
IDLE=${CONN_IDLE:-10000}
IDLE_N=${CONN_IDLE_N:-5000}
ROUNDS=${CONN_ROUNDS:-3}
LOADGEN=${LOADGEN_BIN:-$PWD/build/loadgen}
bench_bins "$@"

# bench/hooks.lua with limits above the idle connections plus the active ones
sed "s/connections = 10000, connections_per_ip = 10000/connections = $((IDLE + 1000)), connections_per_ip = $((IDLE + 1000))/" \
    bench/hooks.lua >"$tmp/hooks.lua"
grep -q "connections = $((IDLE + 1000))" "$tmp/hooks.lua" || die "bench/hooks.lua's limits line changed"


if [[ $SECTIONS == *" instr "* ]]; then
    command -v valgrind >/dev/null || die "valgrind is not installed"
    echo "instructions per connection (callgrind, -w 1, bench/hooks.lua, loadgen -c 50 -r 1):"
    for b in "${bins[@]}"; do
        echo "  $b: $(callgrind_per "$b" "$tmp/hooks.lua" -c 50 -r 1)"
    done
fi

if [[ $SECTIONS == *" cpu "* ]]; then
    targets=("${bins[@]}")
    [[ -x /usr/sbin/smtp-sink ]] && targets+=(smtp-sink)
    echo "server CPU per connection, one message each (loadgen -c 50 -n $N -r 1), $ROUNDS rounds:"
    for ((r = 1; r <= ROUNDS; r++)); do
        for t in "${targets[@]}"; do
            port=$(free_port)
            if [[ $t == smtp-sink ]]; then
                /usr/sbin/smtp-sink -u nobody "127.0.0.1:$port" 4096 &
            else
                "$t" -w 1 -l "127.0.0.1:$port" "$tmp/hooks.lua" >/dev/null 2>"$tmp/k.err" &
            fi
            p=$!
            pids+=("$p")
            wait_port "$p" "$port"
            "$LOADGEN" -c 50 -n 2000 -r 1 -t 60 "127.0.0.1:$port" >/dev/null   # warm up
            c0=$(cpu_ticks "$p")
            out=$(timeout 300 "$LOADGEN" -c 50 -n "$N" -r 1 -t 240 "127.0.0.1:$port")
            c1=$(cpu_ticks "$p")
            stop_pid "$p"
            awk -v t="$t" -v r="$r" -v c=$((c1 - c0)) -v n="$N" -v hz="$(getconf CLK_TCK)" -v cps="$(field conns_per_s "$out")" \
                'BEGIN { printf "  round %d %-40s %6.1f us/conn  %6d conn/s\n", r, t, c * 1e6 / hz / n, cps }'
        done
    done
fi

if [[ $SECTIONS == *" idle "* ]]; then
    hard=$(ulimit -Hn)
    [[ $hard == unlimited ]] || ((hard > IDLE + 500)) || die "the hard fd limit ($hard) is too low for $IDLE idle connections"
    ulimit -n "$hard"
    echo "new connections with $IDLE idle ones open (loadgen -c 20 -n $IDLE_N -r 1):"
    for b in "${bins[@]}"; do
        port=$(free_port)
        "$b" -w 1 -l "127.0.0.1:$port" "$tmp/hooks.lua" >/dev/null 2>"$tmp/k.err" &
        p=$!
        pids+=("$p")
        wait_port "$p" "$port"
        mkfifo "$tmp/hold"
        timeout 600 "$LOADGEN" -i "$IDLE" -t 590 "127.0.0.1:$port" <"$tmp/hold" >"$tmp/idle.out" 2>&1 &
        lp=$!
        pids+=("$lp")
        exec 7>"$tmp/hold"
        for ((i = 0; i < 3000; i++)); do
            grep -q '^ready' "$tmp/idle.out" 2>/dev/null && break
            kill -0 "$lp" 2>/dev/null || break
            sleep 0.1
        done
        ready=$(grep '^ready' "$tmp/idle.out" || echo "ready opened=0")
        c0=$(cpu_ticks "$p")
        out=$(timeout 300 "$LOADGEN" -c 20 -n "$IDLE_N" -r 1 -t 240 "127.0.0.1:$port")
        c1=$(cpu_ticks "$p")
        exec 7>&-
        wait "$lp" 2>/dev/null || true
        rm -f "$tmp/hold"
        stop_pid "$p"
        awk -v b="$b" -v o="$(field opened "$ready")" -v c=$((c1 - c0)) -v n="$IDLE_N" -v hz="$(getconf CLK_TCK)" \
            -v cps="$(field conns_per_s "$out")" -v f="$(field failed "$out")" \
            'BEGIN { printf "  %s: idle=%d  %d conn/s  %.1f us CPU/conn  failed=%s\n", b, o, cps, c * 1e6 / hz / n, f }'
    done
fi
