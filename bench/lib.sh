# bench/lib.sh - what bench/run.sh and bench/queue.sh share; sourced, not run.
# Before sourcing: BENCH_NAME (the prefix of error lines). After: die,
# $tmp (removed on exit), pids (every process started here, killed by PID
# on exit; a script may define bench_on_exit to stop more first),
# apt_install, free_port, wait_port, stop_pid, cpu_ticks, field,
# callgrind_per (needs LOADGEN; wait_port shows $server_log when set).

die() {
    echo "$BENCH_NAME: $*" >&2
    exit 1
}

pids=()
tmp=$(mktemp -d "${TMPDIR:-/tmp}/kurir-$BENCH_NAME.XXXXXX")
bench_cleanup() {
    local p
    if declare -F bench_on_exit >/dev/null; then
        bench_on_exit || true
    fi
    for p in "${pids[@]+"${pids[@]}"}"; do
        kill "$p" 2>/dev/null || true
    done
    for p in "${pids[@]+"${pids[@]}"}"; do
        wait "$p" 2>/dev/null || true
    done
    rm -rf "$tmp"
}
trap bench_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Debian packages for the peers (root only), without starting their daemons
# (a policy-rc.d that refuses, removed again if it was not there before).
apt_install() {
    [[ $(id -u) -eq 0 ]] || die "missing $*: apt-get install $* (as root)"
    local made=""
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        made=1
    fi
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >&2
    [[ -z $made ]] || rm -f /usr/sbin/policy-rc.d
}

# a port on 127.0.0.1 nothing listens on, never the same twice in a run
used_ports=" "
free_port() {
    local i p
    for ((i = 0; i < 200; i++)); do
        p=$((61000 + RANDOM % 4000))
        [[ $used_ports == *" $p "* ]] && continue
        if ! (exec 9<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            used_ports+="$p "
            echo "$p"
            return
        fi
    done
    die "no free port"
}

# wait_port PID PORT: until something listens on 127.0.0.1:PORT; dies if
# PID (a server started here; "-" for none) exits first or after 30 s
wait_port() {
    local pid=$1 port=$2 i
    for ((i = 0; i < 300; i++)); do
        (exec 9<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return
        if [[ $pid != - ]] && ! kill -0 "$pid" 2>/dev/null; then
            die "server $pid exited before listening on $port${server_log:+; log: $(tail -5 "$server_log" 2>/dev/null)}"
        fi
        sleep 0.1
    done
    die "nothing listening on $port after 30 s"
}

stop_pid() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# cpu_ticks PID [reaped]: CPU ticks (utime + stime) of a process and its
# live children (kurir's workers); with "reaped", also of the children it
# has reaped (cutime + cstime: Postfix's short-lived daemons)
cpu_ticks() {
    local p t=0 x f='$12 + $13'
    [[ ${2:-} == reaped ]] && f='$12 + $13 + $14 + $15'
    for p in "$1" $(ps --ppid "$1" -o pid= 2>/dev/null || true); do
        x=$(awk "{ sub(/.*\\) /, \"\"); print $f }" "/proc/$p/stat" 2>/dev/null || echo 0)
        t=$((t + x))
    done
    echo "$t"
}

# bench_bins KURIR_BIN...: the kurir binaries to compare (default
# build/kurir) into bins; checks them and LOADGEN
bench_bins() {
    bins=("$@")
    ((${#bins[@]})) || bins=("$PWD/build/kurir")
    [[ -x $LOADGEN ]] || die "no load generator at $LOADGEN (cmake --build build)"
    local b
    for b in "${bins[@]}"; do [[ -x $b ]] || die "not executable: $b"; done
}

# field NAME LINE: the value of NAME=value in a key=value line (loadgen's)
field() { sed -n "s/.*\\b$1=\\([^ ]*\\).*/\\1/p" <<<"$2"; }

# callgrind_per BIN SCRIPT LOADGEN-ARGS...: instructions per message of
# `BIN -w 1 SCRIPT` under callgrind: two runs of LOADGEN (1,000 and 6,000
# messages), the difference of the totals / 5,000, so start-up cancels out
callgrind_per() {
    local bin=$1 script=$2 n port p totals=()
    shift 2
    for n in 1000 6000; do
        port=$(free_port)
        valgrind --tool=callgrind --callgrind-out-file="$tmp/cg.$n" "$bin" -w 1 -l "127.0.0.1:$port" \
            "$script" >/dev/null 2>"$tmp/cg.err" &
        p=$!
        pids+=("$p")
        wait_port "$p" "$port"
        timeout 300 "$LOADGEN" "$@" -n "$n" -t 240 "127.0.0.1:$port" >/dev/null
        stop_pid "$p"
        totals+=("$(callgrind_annotate "$tmp/cg.$n" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')")
    done
    echo $(((totals[1] - totals[0]) / 5000))
}
