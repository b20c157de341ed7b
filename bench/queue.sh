#!/bin/sh
# bench/queue.sh - the queue end to end: smtp-source -> kurir (every
# message committed to the queue before its 250) -> kurir.relay ->
# smtp-sink. Prints the accept rate and the end-to-end rate (until every
# message was delivered to smtp-sink), and the group-commit figures.
# usage: bench/queue.sh [KURIR [MESSAGES]]   (defaults: build/kurir 2000)
set -e
K=${1:-build/kurir}; N=${2:-2000}
SINK=${BENCH_SINK_PORT:-2733}; KP=${BENCH_KURIR_PORT:-2734}
D=$(mktemp -d)
trap 'rm -rf "$D"' EXIT
smtp-sink -u nobody 127.0.0.1:$SINK 1000 & SP=$!
"$K" "$(dirname "$0")/queue_relay.lua" $SINK $KP "$D/queue" > "$D/log" 2>&1 & KPID=$!
i=0; until grep -q "event=listening" "$D/log"; do i=$((i+1)); [ $i -lt 100 ] || exit 1; sleep 0.05; done
t0=$(date +%s.%N)
smtp-source -d -s 20 -m "$N" -l 1024 -t to@example.test -f from@example.test 127.0.0.1:$KP
t1=$(date +%s.%N)
i=0
while [ "$(grep -c "event=queue_done" "$D/log")" -lt "$N" ]; do
  i=$((i+1)); [ $i -lt 2400 ] || { echo "not all delivered after 120 s" >&2; break; }
  sleep 0.05
done
t2=$(date +%s.%N)
kill $KPID $SP; wait $KPID 2>/dev/null || true
echo "accepted $N in $(echo "$t1 - $t0" | bc) s ($(echo "$N / ($t1 - $t0)" | bc) msg/s);" \
  "all at smtp-sink after $(echo "$t2 - $t0" | bc) s ($(echo "$N / ($t2 - $t0)" | bc) msg/s end to end)"
grep "event=queue_closed" "$D/log" || true
