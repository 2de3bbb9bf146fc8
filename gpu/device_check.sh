#!/usr/bin/env bash
# The GPU check (issue 7): on a machine with an NVIDIA GPU and the CUDA toolkit but no Debian
# packages and no network, builds the GPU kernels and their parity tests with nvcc and g++
# alone, runs the tests, and times the kernels (engram-bench-gpu). Finishes in a few minutes.
#
# Third-party sources travel with the tree: run `bash gpu/device_check.sh --carry` on the
# development machine first; it copies GoogleTest (Debian's /usr/src/googletest) and the
# nlohmann-json headers into third_party/ (ignored by git; carry it to the GPU machine).
#
# Usage: bash gpu/device_check.sh [--carry] [OUT_DIR]     (OUT_DIR default: build-gpu-check)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--carry" ]; then
  mkdir -p third_party
  rm -rf third_party/googletest third_party/nlohmann
  cp -r /usr/src/googletest/googletest third_party/googletest
  mkdir -p third_party/nlohmann && cp -r /usr/include/nlohmann third_party/nlohmann/
  echo "third_party/ ready: $(du -sh third_party | cut -f1)"
  exit 0
fi
out=${1:-build-gpu-check}
CUDA=${CUDA_HOME:-/usr/local/cuda}
NVCC=$CUDA/bin/nvcc
ARCH=${CUDA_ARCH:-90}
[ -x "$NVCC" ] || { echo "device_check: no nvcc at $NVCC (set CUDA_HOME)" >&2; exit 1; }
[ -d third_party/googletest ] || { echo "device_check: third_party/ missing (run with --carry where Debian's packages are)" >&2; exit 1; }
mkdir -p "$out"
inc=(-I. -Iinclude -Ithird_party/googletest/include -Ithird_party/googletest -Ithird_party/nlohmann -I"$CUDA/include")
cxx=(g++ -std=c++20 -O2 -DNDEBUG "${inc[@]}")
t0=$(date +%s)
objs=()
build() {  # build SRC: one object per source, in parallel batches
  local src=$1 obj="$out/$(echo "$1" | tr '/' '_').o"
  case "$src" in
    *.cu) "$NVCC" -std=c++20 -O2 -arch="sm_$ARCH" -diag-suppress=2810 "${inc[@]}" -c "$src" -o "$obj" ;;
    *) "${cxx[@]}" -c "$src" -o "$obj" ;;
  esac
}
srcs=(client/engram_hash.cc client/numpy_random.cc client/primes.cc client/engram_spec.cc client/dedup.cc
      client/layer_prefetcher.cc gpu/hash_upload.cc gpu/kernels.cu gpu/cuda_layer_prefetcher.cc
      third_party/googletest/src/gtest-all.cc third_party/googletest/src/gtest_main.cc tests/gpu/kernels_test.cc
      tests/gpu/layer_prefetcher_test.cc gpu/bench_kernels.cc gpu/bench_overlap.cc)
pids=()
for s in "${srcs[@]}"; do build "$s" & pids+=($!); done
for p in "${pids[@]}"; do wait "$p"; done
lib=()
for s in client/engram_hash.cc client/numpy_random.cc client/primes.cc client/engram_spec.cc client/dedup.cc \
         client/layer_prefetcher.cc gpu/hash_upload.cc gpu/kernels.cu gpu/cuda_layer_prefetcher.cc; do
  lib+=("$out/$(echo "$s" | tr '/' '_').o")
done
link=(-L"$CUDA/lib64" -lcudart -lpthread)
"${cxx[@]}" "${lib[@]}" "$out/third_party_googletest_src_gtest-all.cc.o" "$out/third_party_googletest_src_gtest_main.cc.o" \
  "$out/tests_gpu_kernels_test.cc.o" "$out/tests_gpu_layer_prefetcher_test.cc.o" "${link[@]}" -o "$out/gpu_test"
"${cxx[@]}" "${lib[@]}" "$out/gpu_bench_kernels.cc.o" "${link[@]}" -o "$out/engram-bench-gpu"
"${cxx[@]}" "${lib[@]}" "$out/gpu_bench_overlap.cc.o" "${link[@]}" -lcublas -o "$out/engram-bench-overlap"
echo "device_check: built in $(( $(date +%s) - t0 )) s" >&2
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
"$out/gpu_test" --gtest_brief=0
"$out/engram-bench-gpu" | tee "$out/bench_gpu.json"
"$out/engram-bench-overlap" | tee "$out/bench_overlap.json"
