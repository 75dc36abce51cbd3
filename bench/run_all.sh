#!/usr/bin/env bash
# Run every benchmark in its --quick form (what CI runs). Figures and goals are printed, never
# asserted: this exits non-zero only if a script crashes or hangs past its time limit.
set -u
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
LIMIT="${BENCH_TIME_LIMIT:-240}"   # seconds per script before it counts as hung
failed=()
for name in claim_latency roundtrip fleet n0d3_idle scheduling bridge_latency agents_status spend keys tools memory; do
    echo "=== bench/${name}.py --quick"
    start=$(date +%s)
    timeout --kill-after=20 "$LIMIT" "$PY" "bench/${name}.py" --quick
    status=$?
    echo "=== ${name}: exit ${status} after $(( $(date +%s) - start )) s"
    [ "$status" -eq 0 ] || failed+=("${name} (exit ${status})")
done
if [ "${#failed[@]}" -gt 0 ]; then
    echo "crashed: ${failed[*]}" >&2
    exit 1
fi
echo "all benchmarks ran (goals are reported above, not enforced)"
