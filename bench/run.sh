#!/usr/bin/env bash
# make bench: runs the benchmarks and writes JSON results and the ratio table to bench-results/.
# Usage: bench/run.sh BUILD_DIR [--full]
set -euo pipefail
build=${1:-build}
mode=${2:-quick}
out=bench-results
mkdir -p "$out"
reps=3
min_time=0.5
if [ "$mode" = "--full" ]; then reps=9; min_time=2; fi
echo "bench: micro-benchmarks ($reps repetitions, medians; machine: $(nproc) cores)" >&2
"$build/bench/engram-bench-micro" --benchmark_repetitions=$reps --benchmark_min_time=$min_time \
  --benchmark_report_aggregates_only=true --benchmark_format=console \
  --benchmark_out="$out/micro.json" --benchmark_out_format=json
/usr/bin/python3 bench/summarize.py "$out/micro.json" | tee "$out/micro.md"
echo "bench: pull latency through a real engram-server (one-sided, RPC) vs in-process gather" >&2
"$build/bench/engram-bench-pull" --out="$out/pull.json" | tee "$out/pull.txt"
