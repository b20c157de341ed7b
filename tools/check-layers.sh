#!/bin/sh
# The layer rule of core/ (docs/design.md, "Layers"): a file may include
# headers of its own folder and of the folders below it, never above.
# queue/ and http/ stand side by side and do not include each other.
# Includes are written with their folder ("proto/util.h"), so the rule is
# read off the #include lines; any upward include fails.
# Usage: check-layers.sh [ROOT] (default: this repository); ROOT/core is read.
set -eu
root=${1:-"$(dirname "$0")/.."}
cd "$root"

rank() {
    case "$1" in
    proto) echo 0 ;; sys) echo 1 ;; net) echo 2 ;; lua) echo 3 ;; smtp) echo 4 ;;
    queue|http) echo 5 ;; app) echo 6 ;;
    *) echo "check-layers: core/$1 is not a known layer (add it to tools/check-layers.sh and docs/design.md)" >&2; exit 1 ;;
    esac
}

found=$(mktemp)
trap 'rm -f "$found"' EXIT
for f in core/*/*.c core/*/*.h; do
    dir=${f#core/}; dir=${dir%%/*}
    r=$(rank "$dir")
    for inc in $(sed -n 's/^#include "\([a-z_]*\)\/[a-z_]*\.h".*/\1/p' "$f" | sort -u); do
        ri=$(rank "$inc")
        if [ "$ri" -gt "$r" ] || { [ "$ri" -eq "$r" ] && [ "$inc" != "$dir" ]; }; then
            for h in $(sed -n "s/^#include \"\($inc\/[a-z_]*\.h\)\".*/\1/p" "$f"); do
                echo "$f -> $h" >> "$found"
            done
        fi
    done
done
if [ -s "$found" ]; then
    echo "check-layers: a lower layer includes a higher one (docs/design.md, Layers):" >&2
    sort "$found" | sed 's/^/  /' >&2
    exit 1
fi
echo "check-layers: ok"
