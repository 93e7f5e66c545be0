#!/usr/bin/env bash
# Builds bench/metrics (the meters of Sources/CofferCore/Metrics/Meters.swift with -O, nothing else) and
# prints what each recording costs; with CALLGRIND=1 also the instructions one KV read's recording takes
# (callgrind at N and 3N iterations, difference over 2N: setup cancels). Usage: bench/metrics/run.sh [N]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
n=${1:-2000000}
work=$(mktemp -d /tmp/coffer-metrics-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
swiftc -O -package-name coffer -module-name MetricsBench -parse-as-library \
    "$root/Sources/CofferCore/Metrics/Meters.swift" "$here/main.swift" -o "$work/metrics-bench"
"$work/metrics-bench" "$n"
if [ -n "${CALLGRIND:-}" ]; then
    total() {
        valgrind --tool=callgrind --callgrind-out-file="$work/cg.$1" "$work/metrics-bench" "$1" --only-request \
            > /dev/null 2>&1
        sed -n 's/^summary: //p' "$work/cg.$1"
    }
    a=$(total 100000)
    b=$(total 300000)
    echo "instructions per KV read's recording: $(((b - a) / 200000))"
fi
