#!/usr/bin/env bash
# bench/queue.sh - the queue end to end, kurir next to Postfix in one run:
#
#   smtp-source -> server (each message durable before its 250) -> relay
#               -> smtp-sink (the same one for both)
#
# kurir: bench/queue_relay.lua (kurir.relay to smtp-sink, queue.concurrency
# 20). Postfix: Debian's postfix as a private instance (config_directory,
# queue_directory and data_directory under one temp dir on the same disk
# as kurir's queue, relayhost = the smtp-sink, smtpd on 127.0.0.1 only,
# default fsync and concurrency), started with `postfix -c DIR start` and
# stopped with `postfix -c DIR stop`; never the system's instance.
# Each repetition starts the server on an empty queue, sends BENCH_MESSAGES
# messages with smtp-source (BENCH_SESSIONS sessions, BENCH_SIZE bytes) and
# waits until smtp-sink has counted them all (bounded by BENCH_TIME
# seconds). Prints per server the median of BENCH_REPS runs: messages per
# second end to end (first connection to last message at smtp-sink) and
# the accept rate (smtp-source done), the server's CPU seconds per 1,000
# messages (utime + stime of its processes, with the children it reaped:
# Postfix's smtpd, cleanup, qmgr, smtp...); for kurir the syncs (fsync,
# fdatasync, syncfs) of the queue per message, from its queue_closed line.
# BENCH_PERF=1: `perf record -g` on kurir during its last run, the top of
# the report on stdout.
#
# usage: bench/queue.sh     env: KURIR_BIN, BENCH_MESSAGES (5000),
#   BENCH_SESSIONS (20), BENCH_SIZE (1024), BENCH_REPS (3), BENCH_TIME (120)
# Needs root only to install postfix when missing and to run its master.

if [ -z "${BASH_VERSION:-}" ]; then
    exec bash "$0" "$@"
fi
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
KURIR=${KURIR_BIN:-$root/build/kurir}
N=${BENCH_MESSAGES:-5000}
S=${BENCH_SESSIONS:-20}
SIZE=${BENCH_SIZE:-1024}
REPS=${BENCH_REPS:-3}
TIME=${BENCH_TIME:-120}
PERF=${BENCH_PERF:-0}

BENCH_NAME=queue-bench
# shellcheck source=bench/lib.sh
. "$here/lib.sh"
chmod 755 "$tmp"   # postfix's daemons run as postfix
for v in N S SIZE REPS TIME; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a number (got '${!v}')"
done
[[ -x $KURIR ]] || die "no kurir at $KURIR (make build)"
[[ $(id -u) -eq 0 ]] || die "Postfix's master runs as root: run this as root"

# ---- postfix installed on demand, its daemon kept from starting ------------
[[ -x /usr/sbin/postfix && -x /usr/sbin/smtp-sink ]] || apt_install postfix

# ---- every process started here is stopped by PID (postfix by its -c) ------
pf_dirs=()
bench_on_exit() {
    local d
    for d in "${pf_dirs[@]+"${pf_dirs[@]}"}"; do
        postfix -c "$d/etc" stop >/dev/null 2>&1 || true
    done
}

now() { date +%s.%N; }
HZ=$(getconf CLK_TCK)
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

# ---- the one smtp-sink: -c counts the messages it took ---------------------
sink_port=$(free_port)
smtp-sink -c -u nobody "127.0.0.1:$sink_port" 1000 >"$tmp/sink.out" 2>&1 &
pids+=($!)
wait_port - "$sink_port"
sink_count() {
    local c
    c=$(tr '\r' '\n' <"$tmp/sink.out" | sed -n 's/.*mesg=\([0-9]*\).*/\1/p' | tail -1)
    echo "${c:-0}"
}

# load PORT -> "end_to_end_rate accept_rate" (all N at smtp-sink)
load() {
    local port=$1 base t0 t1 t2 deadline
    base=$(sink_count)
    t0=$(now)
    smtp-source -d -s "$S" -m "$N" -l "$SIZE" -t to@example.test -f from@example.test "127.0.0.1:$port"
    t1=$(now)
    deadline=$(echo "$t0 + $TIME" | bc)
    while (($(sink_count) < base + N)); do
        (($(echo "$(now) > $deadline" | bc))) && die "only $(($(sink_count) - base)) of $N at smtp-sink after $TIME s"
        sleep 0.02
    done
    t2=$(now)
    echo "$(echo "$N / ($t2 - $t0)" | bc) $(echo "$N / ($t1 - $t0)" | bc)"
}

# ---- kurir --------------------------------------------------------------------
k_rates=() k_accept=() k_syncs=() k_cpu=()
for ((r = 1; r <= REPS; r++)); do
    port=$(free_port)
    log="$tmp/kurir$r.log"
    "$KURIR" "$here/queue_relay.lua" "$sink_port" "$port" "$tmp/kq$r" >"$log" 2>&1 &
    kpid=$!
    pids+=("$kpid")
    wait_port - "$port"
    for ((i = 0; i < 300; i++)); do   # the queue's owner has recovered it
        grep -q "event=queue_recovered" "$log" && break
        sleep 0.1
    done
    if [[ $PERF == 1 && $r == "$REPS" ]]; then
        # the master and its workers
        workers=$(ps --ppid "$kpid" -o pid= | xargs | tr ' ' ',')
        perf record -g -o "$tmp/perf.data" -p "${workers:+$workers,}$kpid" >/dev/null 2>&1 &
        perf_pid=$!
    fi
    read -r rate accept < <(load "$port")
    if [[ $PERF == 1 && $r == "$REPS" ]]; then
        kill -INT "$perf_pid" 2>/dev/null || true
        wait "$perf_pid" 2>/dev/null || true
    fi
    k_cpu+=("$(echo "scale=3; $(cpu_ticks "$kpid" reaped) / $HZ * 1000 / $N" | bc)")
    kill "$kpid"
    wait "$kpid" 2>/dev/null || true
    syncs=$(sed -n 's/.*event=queue_closed .*syncs=\([0-9]*\).*/\1/p' "$log" | awk '{ s += $1 } END { print s + 0 }')
    k_rates+=("$rate") k_accept+=("$accept") k_syncs+=("$(echo "scale=2; ${syncs:-0} / $N" | bc)")
done

# ---- postfix --------------------------------------------------------------------
p_rates=() p_accept=() p_cpu=()
for ((r = 1; r <= REPS; r++)); do
    port=$(free_port)
    pf="$tmp/pf$r"
    mkdir -p "$pf/etc" "$pf/spool" "$pf/data"
    chown postfix "$pf/data"
    cat >"$pf/etc/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $pf/spool
data_directory = $pf/data
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
shlib_directory = /usr/lib/postfix
meta_directory = /etc/postfix
mail_owner = postfix
setgid_group = postdrop
maillog_file = $pf/maillog
maillog_file_prefixes = $pf
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = postfix.bench.test
mydomain = bench.test
myorigin = bench.test
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
relayhost = [127.0.0.1]:$sink_port
smtp_tls_security_level = none
smtpd_tls_security_level = none
biff = no
EOF
    # the system's services, smtpd on our port, no chroot (no copies of /etc)
    awk -v port="$port" 'BEGIN { OFS = "  " }
        /^#/ || /^[ \t]/ || NF < 8 { print; next }
        { if ($1 == "smtp" && $2 == "inet") $1 = "127.0.0.1:" port; if ($5 == "y") $5 = "n"; print }' \
        /etc/postfix/master.cf >"$pf/etc/master.cf"
    pf_dirs+=("$pf")
    postfix -c "$pf/etc" start >/dev/null 2>&1 || die "postfix did not start: $(tail -3 "$pf/maillog" 2>/dev/null)"
    wait_port - "$port"
    read -r rate accept < <(load "$port")
    mpid=$(tr -d ' ' <"$pf/spool/pid/master.pid")
    p_cpu+=("$(echo "scale=3; $(cpu_ticks "$mpid" reaped) / $HZ * 1000 / $N" | bc)")
    postfix -c "$pf/etc" stop >/dev/null 2>&1 || true
    p_rates+=("$rate") p_accept+=("$accept")
done

k=$(median "${k_rates[@]}")
p=$(median "${p_rates[@]}")
echo "queue end to end: smtp-source -d -s $S -m $N -l $SIZE -> server (durable queue) -> relay -> smtp-sink;" \
    "median of $REPS"
printf '%-8s %6s msg/s end to end  (accept %6s msg/s)  %6s s CPU/1000 msg  runs: %s\n' kurir "$k" \
    "$(median "${k_accept[@]}")" "$(median "${k_cpu[@]}")" "${k_rates[*]}"
printf '%-8s %6s msg/s end to end  (accept %6s msg/s)  %6s s CPU/1000 msg  runs: %s\n' postfix "$p" \
    "$(median "${p_accept[@]}")" "$(median "${p_cpu[@]}")" "${p_rates[*]}"
echo "kurir / postfix: $(echo "scale=2; $k / $p" | bc)x; kurir queue syncs per message: $(median "${k_syncs[@]}")"
if [[ $PERF == 1 ]]; then
    perf report -i "$tmp/perf.data" --stdio --no-children -g none --sort comm,dso,sym --percent-limit 0.7 \
        2>/dev/null | grep -v '^$' | grep -v '^#' | head -30
    perf report -i "$tmp/perf.data" --stdio --no-children -g none --sort dso --percent-limit 0.5 \
        2>/dev/null | grep -v '^$' | grep -v '^#' | head -40
fi
