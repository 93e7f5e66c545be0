#!/usr/bin/env bash
# Runs CofferFuzz harnesses under libFuzzer, one after another (`make fuzz`, `make fuzz-smoke`).
#
#   run.sh BINARY WORKDIR SECONDS RUNS HARNESS...
#
# SECONDS (-max_total_time) or RUNS (-runs) may be empty; with both, whichever comes first ends a
# run. New inputs go to WORKDIR/corpus/HARNESS (the seeds in Tests/Fuzz/Corpus/HARNESS are read,
# never written), crashes to WORKDIR/artifacts/HARNESS/, the full log to WORKDIR/logs/HARNESS.log,
# and one line per finished run is appended to WORKDIR/results.txt. Extra libFuzzer options come
# from $FUZZ_FLAGS. Exits 1 if any harness crashed or broke a property.
set -uo pipefail

bin=$1 work=$2 seconds=$3 runs=$4
shift 4
here=$(cd "$(dirname "$0")" && pwd)
status=0
for harness in "$@"; do
    corpus="$work/corpus/$harness" artifacts="$work/artifacts/$harness" log="$work/logs/$harness.log"
    mkdir -p "$corpus" "$artifacts" "$work/logs"
    options=(-max_len=8192 -timeout=30 -rss_limit_mb=4096 -print_final_stats=1 "-artifact_prefix=$artifacts/")
    [ -n "$seconds" ] && options+=("-max_total_time=$seconds")
    [ -n "$runs" ] && options+=("-runs=$runs")
    [ -f "$here/Dictionaries/$harness.dict" ] && options+=("-dict=$here/Dictionaries/$harness.dict")
    # libFuzzer, not Swift's backtracer, must see the crash, so that it saves the input.
    # shellcheck disable=SC2086
    SWIFT_BACKTRACE=enable=no nice -n 10 "$bin" "$harness" "$corpus" "$here/Corpus/$harness" \
        "${options[@]}" ${FUZZ_FLAGS:-} >"$log" 2>&1
    code=$?
    executed=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    elapsed=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    if [ "$code" -eq 0 ]; then
        line="$harness: ${executed:-?} executions in ${elapsed:-?} s (${rate:-?}/s), no crash"
        echo "fuzz $line"
        echo "$(date -u +%FT%TZ) $(git -C "$here" rev-parse --short HEAD 2>/dev/null) $line" >>"$work/results.txt"
    else
        status=1
        echo "fuzz $harness: FAILED (exit $code) after ${executed:-?} executions; full log: $log"
        grep -v '^#[0-9]' "$log" | tail -n 40
        for crash in "$artifacts"/*; do
            [ -e "$crash" ] && echo "  input saved at $crash; reproduce: SWIFT_BACKTRACE=enable=no $bin $harness $crash"
        done
    fi
done
exit $status
