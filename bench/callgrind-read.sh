#!/usr/bin/env bash
# Instructions per in-process KV read (callgrind counts instructions, not seconds: the same on a busy
# machine). Runs coffer-bench's "kv read (Swift API, handle)" under callgrind for N and 3N iterations
# and prints (total(3N) - total(N)) / 2N, which cancels setup. ONLY=<figure prefix> counts another figure
# (ONLY="kv read (wire JSON" for the wire form; for a figure that runs 1/DIVISOR of the iterations, such as
# ONLY="kv write (Swift API, fsync)" DIVISOR=20 with N >= 4000, the count is per run of it). valgrind 3.19
# cannot read the DWARF of the lld-linked release build, so a copy without debug sections is profiled
# (the symbol table stays: callgrind_annotate still names functions).
# Usage: bench/callgrind-read.sh [coffer-bench] [N]
set -euo pipefail
bench=${1:-$(cd "$(dirname "$0")/.." && swift build -c release --toolset packaging/lld-toolset.json -Xswiftc -static-stdlib --show-bin-path)/coffer-bench}
n=${2:-5000}
work=$(mktemp -d /tmp/coffer-callgrind.XXXXXX)
trap 'rm -rf "$work"' EXIT
objcopy --strip-debug "$bench" "$work/coffer-bench"
total() {
    valgrind --tool=callgrind --callgrind-out-file="$work/cg.$1" "$work/coffer-bench" --iterations "$1" \
        --only "${ONLY:-kv read (Swift API, handle)}" > /dev/null 2>&1
    sed -n 's/^summary: //p' "$work/cg.$1"
}
a=$(total "$n")
b=$(total $((3 * n)))
echo "instructions per ${ONLY:-KV read}: $(((b - a) * ${DIVISOR:-1} / (2 * n)))"
if [ -n "${KEEP:-}" ]; then cp "$work/cg.$((3 * n))" "$KEEP"; echo "profile: $KEEP (callgrind_annotate $KEEP)"; fi
