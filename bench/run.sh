#!/usr/bin/env bash
# bench/run.sh: kurir next to its peers, on 127.0.0.1, in one invocation.
#
# Servers (each started here, measured, stopped by PID):
#   kurir-hooks     kurir -w 1 + bench/hooks.lua (a Lua hook at every stage; discards)
#   kurir-hooks-wN  the same with N workers (N = cores, BENCH_WORKERS)
#   kurir-discard   kurir -w 1 + bench/discard.lua (only a data hook)
#   kurir-mock      the mock server with N workers: Maildir, fsync per message
#   smtp-sink       Postfix's smtp-sink (the reference)
#   aiosmtpd        python3 -m aiosmtpd with its Sink handler (Debian python3-aiosmtpd)
#   smtp-server     nodemailer's smtp-server (bench/peers, npm, exact versions)
#   haraka          Haraka (bench/peers) with bench/peers/haraka: accept, discard, no rDNS
# Load: bench/loadgen (C, libev): BENCH_SESSIONS sessions, BENCH_MESSAGES
# messages of BENCH_SIZE bytes, RFC 2920 pipelining (MAIL, RCPT, DATA in one
# write, the body after 354), BENCH_REPS repetitions; every run is bounded
# by BENCH_TIME seconds. Per server: the median msg/s, its ratio to
# smtp-sink, server CPU seconds per 1,000 messages (utime + stime of the
# server's processes), peak RSS, and KB of RSS per idle connection
# (BENCH_IDLE connections that greeted, sent EHLO and wait).
# Then: pipelined transactions (-p 20) for kurir and smtp-sink; one
# message per connection (-r 1: connect, greeting, EHLO, one transaction,
# QUIT, as most MTAs deliver to an MX) for kurir and smtp-sink; STARTTLS
# sessions/s and TLS throughput for kurir and smtp-server with one
# certificate; smtp-source as a second, independent client; 1 against N
# workers with the generator pinned to one core; 50 MB messages (DATA and
# BDAT) against a plain loopback TCP copy (bench/tcpcopy); with
# BENCH_IDLE_BIG, that many idle connections (more workers and generator
# processes when one process may not hold that many descriptors).
#
# Environment: KURIR_BIN, LOADGEN_BIN, TCPCOPY_BIN, BENCH_MESSAGES (20000),
# BENCH_MOCK_MESSAGES (2000), BENCH_SESSIONS (50), BENCH_SIZE (1024),
# BENCH_REPS (3), BENCH_TIME (20), BENCH_IDLE (2000; 0 skips),
# BENCH_WORKERS (cores), BENCH_TARGETS (all of the above), BENCH_SECTIONS
# (table pipelined conn tls source workers large idle), BENCH_LARGE (5 messages
# of 50 MB per run), BENCH_IDLE_BIG (0), BENCH_IDLE_BIG_TLS (10000).

if [ -z "${BASH_VERSION:-}" ]; then
    exec bash "$0" "$@"
fi
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
KURIR=${KURIR_BIN:-$root/build/kurir}
LOADGEN=${LOADGEN_BIN:-$(dirname "$KURIR")/loadgen}
TCPCOPY=${TCPCOPY_BIN:-$(dirname "$KURIR")/tcpcopy}
LARGE=${BENCH_LARGE:-5}
MESSAGES=${BENCH_MESSAGES:-20000}
MOCK_MESSAGES=${BENCH_MOCK_MESSAGES:-2000}
SESSIONS=${BENCH_SESSIONS:-50}
SIZE=${BENCH_SIZE:-1024}
REPS=${BENCH_REPS:-3}
TIME=${BENCH_TIME:-20}
IDLE=${BENCH_IDLE:-2000}
NW=${BENCH_WORKERS:-$(nproc)}
SECTIONS=" ${BENCH_SECTIONS:-table pipelined conn tls source workers large idle} "
TARGETS=${BENCH_TARGETS:-"kurir-hooks kurir-hooks-w$NW kurir-discard kurir-mock smtp-sink aiosmtpd smtp-server haraka"}
PY=/usr/bin/python3
HZ=$(getconf CLK_TCK)

BENCH_NAME=bench
# shellcheck source=bench/lib.sh
. "$here/lib.sh"
server_log=$tmp/server.log
for v in MESSAGES MOCK_MESSAGES SESSIONS SIZE REPS TIME IDLE NW LARGE; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a number (got '${!v}')"
done
[[ -x $KURIR ]] || die "no kurir at $KURIR (make build)"
[[ -x $LOADGEN ]] || die "no loadgen at $LOADGEN (make build)"

# ---- peers: installed on demand (root), never a daemon started -------------
have_sink() { [[ -x /usr/sbin/smtp-sink ]]; }
have_aiosmtpd() { "$PY" -c 'import aiosmtpd' 2>/dev/null; }
# only what the chosen sections and targets use
wants() { # wants TARGET: the table runs it
    [[ $SECTIONS == *" table "* && " $TARGETS " == *" $1 "* ]]
}
have_sink || apt_install postfix
if wants aiosmtpd && ! have_aiosmtpd; then
    apt_install python3-aiosmtpd
fi
if { wants smtp-server || wants haraka || [[ $SECTIONS == *" tls "* ]]; } &&
    [[ ! -d $here/peers/node_modules/smtp-server || ! -d $here/peers/node_modules/Haraka ]]; then
    command -v npm >/dev/null || die "npm is needed for smtp-server and Haraka (apt-get install npm)"
    (cd "$here/peers" && npm ci --no-audit --no-fund --ignore-scripts >&2)
fi

# ---- helpers -------------------------------------------------------------

# the server's processes: its PID and its children (kurir's workers)
tree() {
    echo "$1"
    ps --ppid "$1" -o pid= 2>/dev/null || true
}
status_kb() { # status_kb PID FIELD: summed over the tree
    local p t=0 x
    for p in $(tree "$1"); do
        x=$(awk -v f="$2:" '$1 == f { print $2 }' "/proc/$p/status" 2>/dev/null || echo 0)
        t=$((t + ${x:-0}))
    done
    echo "$t"
}

# a certificate both TLS servers use (P-256, like kurir's self-signed one)
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
    -keyout "$tmp/key.pem" -out "$tmp/cert.pem" >/dev/null 2>&1 || die "openssl req failed"
cat >"$tmp/hooks_tls.lua" <<EOF
dofile("$here/hooks.lua")
require("kurir").configure { tls = { cert = "$tmp/cert.pem", key = "$tmp/key.pem" } }
EOF
cat >"$tmp/large.lua" <<EOF
dofile("$here/hooks.lua")
require("kurir").configure { limits = { message_size = 64 * 1024 * 1024 } }
EOF
cat >"$tmp/mock_bench.lua" <<'EOF'
local kurir = require "kurir"
kurir.configure { limits = { connections = 200000, connections_per_ip = 200000 } }
require("kurir.mock").setup(kurir, arg)
EOF

server=""
start() { # start NAME PORT
    local name=$1 port=$2
    case $name in
    kurir-hooks) exec "$KURIR" -w 1 -l "127.0.0.1:$port" "$tmp/hooks_tls.lua" ;;
    kurir-hooks-w*) exec "$KURIR" -w "${name#kurir-hooks-w}" -l "127.0.0.1:$port" "$tmp/hooks_tls.lua" ;;
    kurir-discard) exec "$KURIR" -w 1 -l "127.0.0.1:$port" "$here/discard.lua" ;;
    kurir-large) exec "$KURIR" -w 1 -l "127.0.0.1:$port" "$tmp/large.lua" ;;
    kurir-mock) exec "$KURIR" -w "$NW" -l "127.0.0.1:$port" "$tmp/mock_bench.lua" --maildir "$tmp/Maildir" ;;
    smtp-sink) exec /usr/sbin/smtp-sink -u nobody "127.0.0.1:$port" 4096 ;;
    aiosmtpd) exec "$PY" -m aiosmtpd -n -l "127.0.0.1:$port" -c aiosmtpd.handlers.Sink ;;
    smtp-server) exec node "$here/peers/smtp_server_sink.js" "$port" "$tmp/cert.pem" "$tmp/key.pem" ;;
    haraka)
        rm -rf "$tmp/haraka"
        mkdir -p "$tmp/haraka"
        cp -r "$here/peers/node_modules/Haraka/config" "$tmp/haraka/config"
        cp -r "$here/peers/haraka/." "$tmp/haraka/"
        sed -i "s/PORT/$port/" "$tmp/haraka/config/smtp.ini"
        exec node "$here/peers/node_modules/Haraka/bin/haraka" -c "$tmp/haraka"
        ;;
    *) die "unknown target $name" ;;
    esac
}
launch() {
    local name=$1 port=$2
    (start "$name" "$port") >"$tmp/server.log" 2>&1 &
    server=$!
    pids+=("$server")
    wait_port "$server" "$port"
}
stop() {
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
}

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ a[NR] = $1 } END { print (NR ? a[int((NR + 1) / 2)] : 0) }'; }

# run_load PORT ARGS...: REPS runs of loadgen (under $PIN when set); sets
# med_rate (msg/s), med_mb (MB/s), med_cpu (server s/1000 msgs), med_client
run_load() {
    local port=$1
    shift
    local rates="" cpus="" clients="" mbs="" i out c0 c1 n
    for ((i = 0; i < REPS; i++)); do
        c0=$(cpu_ticks "$server")
        # shellcheck disable=SC2086 # PIN is a command prefix (taskset -c 0)
        out=$(timeout $((TIME + 30)) ${PIN:-} "$LOADGEN" -t "$TIME" "$@" "127.0.0.1:$port" 2>>"$tmp/loadgen.err" || true)
        c1=$(cpu_ticks "$server")
        n=$(field messages "$out")
        [[ -n $n && $n -gt 0 ]] || {
            echo "bench: no messages: $out $(tail -3 "$tmp/loadgen.err")" >&2
            continue
        }
        rates+=" $(field msgs_per_s "$out")"
        mbs+=" $(field mb_per_s "$out")"
        cpus+=" $(awk -v t=$((c1 - c0)) -v hz="$HZ" -v n="$n" 'BEGIN { printf "%.4f", t / hz / n * 1000 }')"
        clients+=" $(awk -v u="$(field client_cpu_us_per_msg "$out")" 'BEGIN { printf "%.4f", u / 1000 }')"
        last_out=$out
    done
    med_rate=$(median <<<"$rates")
    med_mb=$(median <<<"$mbs")
    med_cpu=$(median <<<"$cpus")
    med_client=$(median <<<"$clients")
}

idle_kb() { # KB of RSS per idle connection (BENCH_IDLE of them)
    local port=$1 before after out
    ((IDLE > 0)) || { echo "-"; return; }
    before=$(status_kb "$server" VmRSS)
    mkfifo "$tmp/hold"
    timeout $((TIME + 60)) "$LOADGEN" -i "$IDLE" -t $((TIME + 50)) "127.0.0.1:$port" <"$tmp/hold" >"$tmp/idle.out" 2>&1 &
    local lp=$!
    pids+=("$lp")
    exec 7>"$tmp/hold"
    local i
    for ((i = 0; i < 600; i++)); do
        grep -q '^ready' "$tmp/idle.out" 2>/dev/null && break
        kill -0 "$lp" 2>/dev/null || break
        sleep 0.1
    done
    sleep 0.5
    after=$(status_kb "$server" VmRSS)
    out=$(grep '^ready' "$tmp/idle.out" || echo "ready opened=0")
    exec 7>&-
    wait "$lp" 2>/dev/null || true
    rm -f "$tmp/hold"
    local opened
    opened=$(field opened "$out")
    if [[ ${opened:-0} -gt 0 ]]; then
        awk -v a="$after" -v b="$before" -v n="$opened" 'BEGIN { printf "%.1f", (a - b) / n }'
    else
        echo "failed"
    fi
}

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

echo "bench: $(nproc) cores; $MESSAGES messages of $SIZE B over $SESSIONS sessions, median of $REPS, runs capped at ${TIME}s" >&2
rows=()
sink_rate=""
declare -A rate cpu
[[ $SECTIONS == *" table "* ]] || TARGETS=""
for t in $TARGETS; do
    port=$(free_port)
    launch "$t" "$port"
    n=$MESSAGES
    [[ $t == kurir-mock ]] && n=$MOCK_MESSAGES
    run_load "$port" -c "$SESSIONS" -n "$n" -s "$SIZE"
    peak=$(status_kb "$server" VmHWM)
    kb=$(idle_kb "$port")
    stop
    rm -rf "$tmp/Maildir"
    rate[$t]=$med_rate
    cpu[$t]=$med_cpu
    [[ $t == smtp-sink ]] && sink_rate=$med_rate
    rows+=("$t $med_rate $med_cpu $((peak / 1024)) $kb $med_client")
    printf '  %-16s %8s msg/s  %s s CPU/1000\n' "$t" "$med_rate" "$med_cpu" >&2
done

[[ -n $TARGETS ]] && echo
[[ -n $TARGETS ]] && printf '%-16s %9s %8s %14s %9s %12s %14s\n' server "msg/s" "x sink" "CPU s/1000 msg" "peak MB" "KB/idle conn" "loadgen s/1000"
for r in "${rows[@]+"${rows[@]}"}"; do
    read -r t mr mc pk kb cl <<<"$r"
    ratio=$(awk -v a="$mr" -v b="${sink_rate:-0}" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')
    printf '%-16s %9s %8s %14s %9s %12s %14s\n' "$t" "$mr" "$ratio" "$mc" "$pk" "$kb" "$cl"
done

# ---- pipelined transactions: kurir (one worker) and smtp-sink ---------------
if [[ $SECTIONS == *" pipelined "* ]]; then
echo
echo "pipelined: 20 whole transactions per write (bodies before the 354), $SESSIONS sessions"
for t in kurir-hooks smtp-sink; do
    port=$(free_port)
    launch "$t" "$port"
    run_load "$port" -c "$SESSIONS" -n $((MESSAGES * 5)) -s "$SIZE" -p 20
    stop
    printf '  %-16s %9s msg/s %10s s CPU/1000 msg  (loadgen %s)\n' "$t" "$med_rate" "$med_cpu" "$med_client"
done
fi

# ---- one message per connection: kurir (one worker) and smtp-sink ----------
if [[ $SECTIONS == *" conn "* ]]; then
echo
echo "one message per connection (-r 1: greeting, EHLO, one transaction, QUIT), $SESSIONS sessions"
conn_sink_cpu=""
for t in smtp-sink kurir-hooks; do
    port=$(free_port)
    launch "$t" "$port"
    run_load "$port" -c "$SESSIONS" -n "$MESSAGES" -s "$SIZE" -r 1
    stop
    [[ $t == smtp-sink ]] && conn_sink_cpu=$med_cpu
    ratio=$(awk -v a="$med_cpu" -v b="${conn_sink_cpu:-0}" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')
    printf '  %-16s %9s msg/s %10s s CPU/1000 msg  (%sx smtp-sink CPU; loadgen %s)\n' "$t" "$med_rate" "$med_cpu" "$ratio" "$med_client"
done
fi

# ---- TLS: kurir and smtp-server, same certificate ---------------------------
if [[ $SECTIONS == *" tls "* ]]; then
echo
echo "TLS (STARTTLS, same P-256 certificate, TLS 1.3, session tickets on):"
for t in kurir-hooks "kurir-hooks-w$NW" smtp-server; do
    port=$(free_port)
    launch "$t" "$port"
    run_load "$port" -c 20 -n $((MESSAGES / 10)) -r 1 -T starttls
    hs=$(field handshakes_per_s "$last_out")
    res=$(field resumed "$last_out")
    printf '  %-16s new sessions/s %6s (resumed %s)  %8s s CPU/1000 sessions\n' "$t" "$med_rate" "$res" "$med_cpu"
    run_load "$port" -c "$SESSIONS" -n "$MESSAGES" -T starttls
    printf '  %-16s throughput     %6s msg/s         %8s s CPU/1000 msg\n' "$t" "$med_rate" "$med_cpu"
    : "$hs"
    stop
done
fi

# ---- smtp-source, a second client --------------------------------------------
# -d: every session sends its messages over one connection; without it,
# smtp-source connects once per message (its default).
if [[ -x /usr/sbin/smtp-source && $SECTIONS == *" source "* ]]; then
    for d in -d ""; do
        echo
        echo "smtp-source -s $SESSIONS -m $MESSAGES -l $SIZE ${d:-(one connection per message)}${d:+ (one connection per session)} (one run each):"
        for t in kurir-hooks smtp-sink; do
            port=$(free_port)
            launch "$t" "$port"
            c0=$(cpu_ticks "$server")
            s0=$(date +%s.%N)
            # shellcheck disable=SC2086 # $d is empty or -d
            timeout $((TIME + 30)) /usr/sbin/smtp-source -s "$SESSIONS" -m "$MESSAGES" -l "$SIZE" $d \
                -t to@example.test -f from@example.test "127.0.0.1:$port" >/dev/null 2>&1 || true
            s1=$(date +%s.%N)
            c1=$(cpu_ticks "$server")
            stop
            awk -v n="$MESSAGES" -v a="$s0" -v b="$s1" -v t=$((c1 - c0)) -v hz="$HZ" -v name="$t" \
                'BEGIN { printf "  %-16s %9.0f msg/s %10.4f s CPU/1000 msg\n", name, n / (b - a), t / hz / n * 1000 }'
        done
    done
fi
# ---- workers: 1 against N, the generator pinned to one core -----------------
# The pipelined generator costs about a tenth of the server's CPU per
# message; pinned to core 0 it cannot take a worker's core from under it.
if [[ $SECTIONS == *" workers "* ]] && ((NW > 1)); then
    echo
    echo "workers: pipelined (-p 20), $SESSIONS sessions, loadgen pinned to core 0 (taskset -c 0)"
    for t in kurir-hooks "kurir-hooks-w$NW"; do
        port=$(free_port)
        launch "$t" "$port"
        PIN="taskset -c 0" run_load "$port" -c "$SESSIONS" -n $((MESSAGES * 5)) -s "$SIZE" -p 20
        stop
        printf '  %-16s %9s msg/s %10s s CPU/1000 msg  (loadgen %s)\n' "$t" "$med_rate" "$med_cpu" "$med_client"
    done
fi

# ---- large messages: 50 MB over DATA and BDAT against a plain TCP copy ------
if [[ $SECTIONS == *" large "* ]]; then
    echo
    echo "large messages: $LARGE messages of 50 MB per run, one session; MB/s and server CPU s per GB"
    if [[ -x $TCPCOPY ]]; then
        out=$("$TCPCOPY" 52428800 $((REPS * LARGE)))
        printf '  %-22s %8s MB/s %8s s CPU/GB (the reading side; plain loopback TCP copy, 1 MiB reads, nothing stored)\n' \
            tcpcopy "$(field mb_per_s "$out")" "$(field sink_cpu_s_per_gb "$out")"
    fi
    for t in kurir-large smtp-sink; do
        port=$(free_port)
        launch "$t" "$port"
        for mode in DATA BDAT; do
            flag=()
            [[ $mode == BDAT ]] && flag=(-B)
            run_load "$port" -c 1 -n "$LARGE" -s 50m "${flag[@]}"
            # s per 1000 messages of 50 MiB = s per 52.4 GB
            printf '  %-22s %8s MB/s %8s s CPU/GB\n' "$t $mode" "$med_mb" \
                "$(awk -v c="$med_cpu" 'BEGIN { printf "%.2f", c / 52.4288 }')"
        done
        stop
    done
fi

# ---- many idle connections -------------------------------------------------
# One process holds at most `ulimit -Hn` descriptors. Without the right to
# raise it (CAP_SYS_RESOURCE), the connections are spread over enough
# workers (one shared count, limits.connections) and as many generator
# processes, each under the limit.
BIG=${BENCH_IDLE_BIG:-0}
BIG_TLS=${BENCH_IDLE_BIG_TLS:-10000}
if ((BIG > 0)) && [[ $SECTIONS == *" idle "* ]]; then
    [[ $BIG_TLS =~ ^[0-9]+$ ]] || die "BENCH_IDLE_BIG_TLS must be a number"
    ulimit -Hn $((BIG + 1000)) 2>/dev/null || true
    hard=$(ulimit -Hn)
    [[ $hard == unlimited ]] && hard=$((BIG + 1000))
    ulimit -n "$hard"
    per=$((hard - 2000))   # connections one process takes, with room for its other files
    ((per > 1000)) || die "the hard fd limit ($hard) is too low for the idle section"
    {
        echo 'local kurir = require "kurir"'
        echo "kurir.configure { limits = { connections = $((BIG + 100)), connections_per_ip = $((BIG + 100)) },"
        echo "  tls = { cert = \"$tmp/cert.pem\", key = \"$tmp/key.pem\" } }"
        echo 'function kurir.on.data() return 250 end'
    } >"$tmp/idle_big.lua"
    for mode in plain smtps; do
        n=$BIG
        [[ $mode == smtps ]] && n=$((BIG_TLS < BIG ? BIG_TLS : BIG))
        ((n > 0)) || continue
        gens=$(((n + per - 1) / per))
        workers=1
        # a worker may receive more than its share from the shared socket:
        # one spare; a worker at its limit pauses accepting, the others go on
        ((n > per)) && workers=$((gens + 1))
        echo
        echo "idle connections: $n over $mode (hard fd limit $hard: $workers worker(s), $gens generator(s); greeting read, EHLO sent):"
        port=$(free_port)
        l="127.0.0.1:$port"
        targs=()
        if [[ $mode == smtps ]]; then
            l="smtps://127.0.0.1:$port"
            targs=(-T smtps)
        fi
        "$KURIR" -w "$workers" -l "$l" "$tmp/idle_big.lua" >"$tmp/server.log" 2>&1 &
        server=$!
        pids+=("$server")
        wait_port "$server" "$port"
        sleep 1   # every worker up (their RSS is in the "before")
        before=$(status_kb "$server" VmRSS)
        mkfifo "$tmp/hold"
        lps=()
        for ((g = 0; g < gens; g++)); do
            k=$((n / gens + (g < n % gens ? 1 : 0)))
            timeout 900 "$LOADGEN" -i "$k" -t 890 "${targs[@]}" \
                -b 127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5,127.0.0.6,127.0.0.7,127.0.0.8,127.0.0.9 \
                "127.0.0.1:$port" <"$tmp/hold" >"$tmp/idle.$g.out" 2>&1 &
            lps+=($!)
            pids+=($!)
        done
        exec 7>"$tmp/hold"
        for ((g = 0; g < gens; g++)); do
            for ((i = 0; i < 9000; i++)); do
                grep -q '^ready' "$tmp/idle.$g.out" 2>/dev/null && break
                kill -0 "${lps[g]}" 2>/dev/null || break
                sleep 0.1
            done
        done
        sleep 1
        after=$(status_kb "$server" VmRSS)
        opened=0
        failed=0
        for ((g = 0; g < gens; g++)); do
            o=$(grep '^ready' "$tmp/idle.$g.out" || echo "ready opened=0 failed=?")
            opened=$((opened + $(field opened "$o")))
            f=$(field failed "$o")
            [[ $f =~ ^[0-9]+$ ]] && failed=$((failed + f))
        done
        exec 7>&-
        for p in "${lps[@]}"; do
            wait "$p" 2>/dev/null || true
        done
        rm -f "$tmp/hold"
        stop
        awk -v a="$after" -v b="$before" -v n="$opened" -v f="$failed" -v m="$mode" \
            'BEGIN { printf "  %-6s opened=%d failed=%d  RSS %d -> %d kB: %.2f KB per connection\n", m, n, f, b, a, (n > 0 ? (a - b) / n : 0) }'
    done
fi

echo
echo "machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GB", $2 / 1048576 }' /proc/meminfo), load average $(cut -d' ' -f1-3 /proc/loadavg)"
