#!/usr/bin/env bash
# bench/run.sh: throughput and memory benchmarks of kurir, on loopback.
#
# Throughput: Postfix's smtp-source sends BENCH_MESSAGES messages
# (default 20000) of 1 KB over 20 parallel sessions to each target:
#   mock       kurir + scripts/mock.lua (kurir.mock), Maildir in a temp dir,
#              every message written and fsync'ed (the real cost)
#   discard    kurir + bench/discard.lua (only a data hook returning 250)
#   hooks      kurir + bench/hooks.lua (a small Lua hook at every stage)
#   smtp-sink  Postfix's smtp-sink, the reference (it throws mail away)
# each twice: many messages per session (smtp-source -d) and one message
# per session (a new connection for every message).
#
# Memory: kurir + bench/discard.lua, VmRSS before and after
# bench/idle_conns.py opens BENCH_IDLE_CONNS (default 2000) connections
# that read the greeting, sent EHLO and then stay idle.
#
# Needs bash, python3, and smtp-source/smtp-sink from Debian's postfix
# package; run as root without them, it installs postfix with apt-get (never
# starting its daemon). Every server it starts is killed by PID on exit.
#
# Environment: KURIR_BIN (default build/kurir), BENCH_MESSAGES (20000),
# BENCH_SESSIONS (20), BENCH_SIZE (1024), BENCH_IDLE_CONNS (2000),
# BENCH_TARGETS ("mock discard hooks smtp-sink"), BENCH_TIMEOUT (seconds
# per smtp-source run, 120).

# `sh bench/run.sh` (the Makefile's bench target) runs this under dash:
# hand over to bash before any bash-only line is read.
if [ -z "${BASH_VERSION:-}" ]; then
    exec bash "$0" "$@"
fi

set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")

KURIR=${KURIR_BIN:-$root/build/kurir}
MESSAGES=${BENCH_MESSAGES:-20000}
SESSIONS=${BENCH_SESSIONS:-20}
SIZE=${BENCH_SIZE:-1024}
IDLE_CONNS=${BENCH_IDLE_CONNS:-2000}
TARGETS=${BENCH_TARGETS:-"mock discard hooks smtp-sink"}
RUN_TIMEOUT=${BENCH_TIMEOUT:-120}
FROM=from@example.test
TO=to@example.test

die() {
    echo "bench: $*" >&2
    exit 1
}

for v in MESSAGES SESSIONS SIZE IDLE_CONNS RUN_TIMEOUT; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a number (got '${!v}')"
done
command -v python3 >/dev/null || die "python3 is needed (bench/idle_conns.py)"
[[ -x $KURIR ]] || die "no kurir binary at $KURIR (run 'make build' or set KURIR_BIN)"

# ---- cleanup: every process we start is recorded here and killed by PID ---

pids=()
tmp=""
spool=""
policy_rc_made=""

cleanup() {
    local p
    for p in "${pids[@]}"; do
        if kill -0 "$p" 2>/dev/null; then
            kill "$p" 2>/dev/null || true
            wait "$p" 2>/dev/null || true
        fi
    done
    exec 3>&- 2>/dev/null || true
    if [[ -n $policy_rc_made ]]; then
        rm -f /usr/sbin/policy-rc.d
    fi
    if [[ -n $tmp && -d $tmp ]]; then
        rm -rf "$tmp"
    fi
    if [[ -n $spool && -d $spool ]]; then
        rm -rf "$spool"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

forget_pid() {
    local p keep=()
    for p in "${pids[@]}"; do
        [[ $p == "$1" ]] || keep+=("$p")
    done
    pids=("${keep[@]+"${keep[@]}"}")
}

stop_pid() {
    local p=$1
    if kill -0 "$p" 2>/dev/null; then
        kill "$p" 2>/dev/null || true
    fi
    wait "$p" 2>/dev/null || true
    forget_pid "$p"
}

# ---- smtp-source / smtp-sink ----------------------------------------------

find_tool() {
    local t=$1
    if command -v "$t" >/dev/null 2>&1; then
        command -v "$t"
    elif [[ -x /usr/sbin/$t ]]; then
        echo "/usr/sbin/$t"
    fi
}

install_postfix() {
    # Only for smtp-source and smtp-sink. A policy-rc.d that refuses every
    # start keeps the Postfix daemon from being started by the package.
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        policy_rc_made=1
    fi
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends postfix >&2
    if [[ -n $policy_rc_made ]]; then
        rm -f /usr/sbin/policy-rc.d
        policy_rc_made=""
    fi
}

SOURCE=$(find_tool smtp-source)
SINK=$(find_tool smtp-sink)
if [[ -z $SOURCE || -z $SINK ]]; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        echo "bench: smtp-source missing; installing Debian's postfix for it (daemon not started)" >&2
        install_postfix
        SOURCE=$(find_tool smtp-source)
        SINK=$(find_tool smtp-sink)
    fi
fi
if [[ -z $SOURCE || -z $SINK ]]; then
    die "smtp-source and smtp-sink are needed: install Debian's postfix package, e.g.
  echo 'postfix postfix/main_mailer_type select No configuration' | sudo debconf-set-selections
  sudo DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postfix
(the Postfix daemon itself is not needed and need not run)"
fi

# ---- set-up -----------------------------------------------------------------

# 2000 idle connections need 2000+ descriptors in kurir and in the client
if (($(ulimit -n) < 8192)); then
    ulimit -n 8192 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
fi
if (($(ulimit -n) < IDLE_CONNS + 64)); then
    echo "bench: warning: ulimit -n is $(ulimit -n), too low for $IDLE_CONNS connections" >&2
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/kurir-bench.XXXXXX")

# Where kurir spools message bodies over 64 KiB (its $TMPDIR; smaller
# bodies stay in memory). Default: a directory on disk under $tmp, as in
# production; BENCH_SPOOL=/dev/shm puts it on a tmpfs.
if [[ -n ${BENCH_SPOOL:-} ]]; then
    [[ -d $BENCH_SPOOL && -w $BENCH_SPOOL ]] || die "BENCH_SPOOL=$BENCH_SPOOL is not a writable directory"
    spool=$(mktemp -d "$BENCH_SPOOL/kurir-bench-spool.XXXXXX")
else
    spool=$(mktemp -d "$tmp/spool.XXXXXX")
fi

# the mock server with the limits raised; kurir.mock stores into --maildir
cat >"$tmp/mock_bench.lua" <<'EOF'
local kurir = require "kurir"
kurir.configure { limits = { connections = 10000, connections_per_ip = 10000 } }
require("kurir.mock").setup(kurir, arg)
EOF

# A port nobody listens on, in 61000-64999, for smtp-sink (kurir itself binds
# port 0 and names its port in the log): above Linux's default ephemeral
# range, so that smtp-source's own connections never take it.
used_ports=" "
free_port() {
    local i p
    for ((i = 0; i < 200; i++)); do
        p=$((61000 + RANDOM % 4000))
        [[ $used_ports == *" $p "* ]] && continue
        if ! (exec 9<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            used_ports+="$p "
            echo "$p"
            return 0
        fi
    done
    die "no free port found in 61000-64999"
}

# wait_listening PID PORT LOG: until PORT accepts, bounded to 10 s
wait_listening() {
    local pid=$1 port=$2 log=$3 i
    for ((i = 0; i < 100; i++)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "bench: server exited before listening; its log:" >&2
            tail -20 "$log" >&2 || true
            exit 1
        fi
        if (exec 9<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    die "server (pid $pid) not listening on 127.0.0.1:$port after 10 s"
}

# kurir_port PID LOG: the port of kurir's `listening` log line (it binds
# 127.0.0.1:0, an ephemeral port), bounded to 10 s
kurir_port() {
    local pid=$1 log=$2 i p
    for ((i = 0; i < 100; i++)); do
        p=$(sed -n 's/.*event=listening .*port=\([0-9][0-9]*\).*/\1/p' "$log" | head -1)
        if [[ -n $p ]]; then
            echo "$p"
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "bench: kurir exited before listening; its log:" >&2
            tail -20 "$log" >&2 || true
            exit 1
        fi
        sleep 0.1
    done
    die "kurir (pid $pid) logged no listening line after 10 s"
}

server_pid=""
port=""
# start_target NAME: start the server for a target; sets server_pid and port
start_target() {
    local name=$1 log="$tmp/$1.log"
    port=""
    case $name in
    mock)
        TMPDIR=$spool "$KURIR" -l "127.0.0.1:0" "$tmp/mock_bench.lua" --maildir "$tmp/Maildir" >"$log" 2>&1 &
        ;;
    discard)
        TMPDIR=$spool "$KURIR" -l "127.0.0.1:0" "$here/discard.lua" >"$log" 2>&1 &
        ;;
    hooks)
        TMPDIR=$spool "$KURIR" -l "127.0.0.1:0" "$here/hooks.lua" >"$log" 2>&1 &
        ;;
    smtp-sink)
        # smtp-sink refuses to run as root without -u; it is not Postfix's
        # daemon, only a standalone test server.
        local user=()
        [[ $(id -u) -eq 0 ]] && user=(-u nobody)
        port=$(free_port)
        "$SINK" "${user[@]}" "127.0.0.1:$port" 1000 >"$log" 2>&1 &
        ;;
    *)
        die "unknown target '$name' (known: mock discard hooks smtp-sink)"
        ;;
    esac
    server_pid=$!
    pids+=("$server_pid")
    [[ -n $port ]] || port=$(kurir_port "$server_pid" "$log")
    wait_listening "$server_pid" "$port" "$log"
}

now() { date +%s.%N; }

results=()
# run_source TARGET VARIANT PORT [smtp-source options...]
run_source() {
    local target=$1 variant=$2 port=$3
    shift 3
    local t0 t1 rc=0 secs rate
    t0=$(now)
    timeout "$RUN_TIMEOUT" "$SOURCE" "$@" -s "$SESSIONS" -m "$MESSAGES" -l "$SIZE" \
        -t "$TO" -f "$FROM" "127.0.0.1:$port" >"$tmp/source.out" 2>&1 || rc=$?
    t1=$(now)
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
    if ((rc != 0)); then
        echo "bench: smtp-source against $target ($variant) failed (exit $rc):" >&2
        tail -5 "$tmp/source.out" >&2 || true
        rate="FAILED"
    else
        rate=$(awk -v n="$MESSAGES" -v s="$secs" 'BEGIN { printf "%.0f", (s > 0 ? n / s : 0) }')
    fi
    results+=("$(printf '%-10s %-20s %9s %8s %10s' "$target" "$variant" "$MESSAGES" "$secs" "$rate")")
    printf '  %-10s %-20s %8ss\n' "$target" "$variant" "$secs" >&2
}

# ---- throughput -------------------------------------------------------------

echo "bench: $MESSAGES messages of $SIZE bytes, $SESSIONS parallel sessions, kurir at $KURIR" >&2
echo "bench: kurir spool in $spool ($(df -PT "$spool" | awk 'NR == 2 { print $2 }')), mock Maildir in $tmp/Maildir ($(df -PT "$tmp" | awk 'NR == 2 { print $2 }'))" >&2
# One session, RFC 2920 pipelining: groups of 100 whole transactions per
# write (smtp-source does not pipeline, so it measures round trips).
run_pipeline() {
    local target=$1 port=$2 n=$((MESSAGES * 5)) out secs rate
    if ! out=$(timeout "$RUN_TIMEOUT" python3 "$here/pipeline.py" 127.0.0.1 "$port" "$n"); then
        results+=("$(printf '%-10s %-20s %9s %8s %10s' "$target" "pipelined, 1 session" "$n" "failed" "-")")
        return
    fi
    secs=${out#* }
    rate=$(awk -v n="$n" -v s="$secs" 'BEGIN { printf "%.0f", (s > 0 ? n / s : 0) }')
    results+=("$(printf '%-10s %-20s %9s %8s %10s' "$target" "pipelined, 1 session" "$n" "$secs" "$rate")")
    printf '  %-10s %-20s %8ss\n' "$target" "pipelined, 1 session" "$secs" >&2
}

for target in $TARGETS; do
    start_target "$target"
    run_source "$target" "many/session (-d)" "$port" -d
    run_source "$target" "1/session" "$port"
    [[ $target == mock ]] || run_pipeline "$target" "$port"
    if [[ $target == mock ]]; then
        stored=$(find "$tmp/Maildir/new" -type f | wc -l)
        if ((stored != 2 * MESSAGES)); then
            echo "bench: warning: mock stored $stored messages, expected $((2 * MESSAGES))" >&2
        fi
        rm -rf "$tmp/Maildir"
    fi
    stop_pid "$server_pid"
    # Let the disk settle (the mock's files, their removal) so that the next
    # target, whose spool files live on the same file system, is not
    # measured against this one's write-back.
    t0=$(now)
    timeout 60 sync || true
    printf '  (sync after %s: %ss)\n' "$target" "$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')" >&2
done

echo
printf '%-10s %-20s %9s %8s %10s\n' target variant messages seconds "messages/s"
for line in "${results[@]}"; do
    echo "$line"
done

# ---- memory per idle connection ---------------------------------------------

rss_kb() {
    awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"
}

if ((IDLE_CONNS > 0)); then
    start_target discard
    kpid=$server_pid
    sleep 0.5
    before=$(rss_kb "$kpid")

    mkfifo "$tmp/ctl"
    python3 "$here/idle_conns.py" --hold 60 127.0.0.1 "$port" "$IDLE_CONNS" \
        <"$tmp/ctl" >"$tmp/idle.out" 2>&1 &
    ipid=$!
    pids+=("$ipid")
    exec 3>"$tmp/ctl" # held open: the client keeps its connections until we close it

    ready=""
    for ((i = 0; i < 600; i++)); do # bounded: 60 s
        if grep -q '^ready' "$tmp/idle.out" 2>/dev/null; then
            ready=$(grep '^ready' "$tmp/idle.out")
            break
        fi
        kill -0 "$ipid" 2>/dev/null || break
        sleep 0.1
    done
    [[ -n $ready ]] || {
        cat "$tmp/idle.out" >&2 || true
        die "idle_conns.py did not get ready"
    }
    read -r _ opened failed <<<"$ready"
    sleep 0.5 # let the server finish the last EHLO replies
    after=$(rss_kb "$kpid")
    exec 3>&- # tells idle_conns.py to close everything
    stop_pid "$ipid"
    stop_pid "$kpid"

    echo
    echo "idle connections (kurir + bench/discard.lua, greeting read, EHLO sent):"
    printf '  opened %d, failed %d\n' "$opened" "$failed"
    printf '  VmRSS before %d kB, after %d kB\n' "$before" "$after"
    if ((opened > 0)); then
        awk -v a="$after" -v b="$before" -v n="$opened" \
            'BEGIN { printf "  (after - before) / N = %.1f kB per idle connection\n", (a - b) / n }'
    fi
fi
