#!/usr/bin/env bash
# make bench: runs every benchmark, each against a baseline measured in the same run, and writes
# JSON results, text tables and PNG plots to bench-results/.
# Usage: bench/run.sh BUILD_DIR [--full]     (quick: under 10 minutes on 2 cores)
set -euo pipefail
build=${1:-build}
mode=${2:-quick}
out=bench-results
mkdir -p "$out"
reps=3
min_time=0.5
full=()
if [ "$mode" = "--full" ]; then reps=9; min_time=2; full=(--full); fi
echo "bench: micro-benchmarks ($reps repetitions, medians; machine: $(nproc) cores)" >&2
"$build/bench/engram-bench-micro" --benchmark_repetitions=$reps --benchmark_min_time=$min_time \
  --benchmark_report_aggregates_only=true --benchmark_format=console \
  --benchmark_out="$out/micro.json" --benchmark_out_format=json
/usr/bin/python3 bench/summarize.py "$out/micro.json" | tee "$out/micro.md"
echo "bench: pulls and pushes through a real engram-server vs in-process and Redis (same run)" >&2
"$build/bench/engram-bench-pull" "${full[@]}" --out="$out/pull.json" | tee "$out/pull.txt"
echo "bench: simulated training step (layer-ahead prefetch vs on demand vs in-process)" >&2
"$build/bench/engram-bench-step" "${full[@]}" --out="$out/step.json" | tee "$out/step.txt"
echo "bench: a table 4x its DRAM budget (cold tier: TinyLFU vs LRU vs all-DRAM vs RocksDB MultiGet)" >&2
"$build/bench/engram-bench-cold" "${full[@]}" --out="$out/cold.json" | tee "$out/cold.txt"
echo "bench: live shard moves under a pushing trainer (push latency with and without moves)" >&2
"$build/bench/engram-bench-move" --out="$out/move.json" | tee "$out/move.txt"
/usr/bin/python3 bench/plot.py "$out"
