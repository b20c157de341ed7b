# bench/lib.sh - what bench/run.sh and bench/queue.sh share; sourced, not run.
# Before sourcing: BENCH_NAME (the prefix of error lines). After: die,
# $tmp (removed on exit), pids (every process started here, killed by PID
# on exit; a script may define bench_on_exit to stop more first),
# apt_install, free_port.

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
