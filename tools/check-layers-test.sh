#!/bin/sh
# Proves that tools/check-layers.sh can fail: on a copy of core/ it must
# pass, then fail naming each upward include injected into the copy (a
# lower layer including a higher one, and two side-by-side layers).
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp -r "$here/core" "$tmp/core"
check="$here/tools/check-layers.sh"

sh "$check" "$tmp" >/dev/null || { echo "check-layers-test: the unmodified copy fails" >&2; exit 1; }

inject() {   # file header: add '#include "header"' to the copy of file
    printf '#include "%s"\n' "$2" >> "$tmp/$1"
    if sh "$check" "$tmp" > "$tmp/out" 2>&1; then
        echo "check-layers-test: $1 including $2 was not caught" >&2
        exit 1
    fi
    grep -qF "$1 -> $2" "$tmp/out" || {
        echo "check-layers-test: the failure does not name $1 -> $2:" >&2
        cat "$tmp/out" >&2
        exit 1
    }
    cp "$here/$1" "$tmp/$1"
}
inject core/proto/util.c app/server.h
inject core/net/conn.h lua/engine.h
inject core/queue/queue.c http/http.h
echo "check-layers-test: ok (3 injected upward includes caught)"
