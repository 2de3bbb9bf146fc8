// engram-bench-overlap: the layer-ahead prefetch on a simulated training step (issue 7, part 4).
// A step is `--layers` Transformer layers of real cuBLAS GEMMs (bf16, `--gemms` per layer of
// [tokens x hidden] x [hidden x hidden]) on a compute stream; the Engram layers (the spec's
// layers 2 and 15) add their projection GEMM over the rows LayerPrefetcher gathered, and after
// the forward their gradients go back through PushGrads. Three ways, in the same run:
//   baseline   the GEMMs alone, no Engram lookups
//   prefetch   every Engram layer's Prefetch issued at step start, Acquire just before the layer
//   on_demand  Prefetch and Acquire together just before the layer (the fetch is exposed)
// Rows come from MemoryTables (this process's memory, FP8 E4M3 + UE8M0, dim 256 as
// DeepSeek-V4.1-Flash) with `--pull_us` of sleep per pull standing for the servers' round trip
// (the GPU machine has no servers). Prints one JSON object: median step ms of each way and the
// overhead over the baseline in percent. Exits 2 without a GPU.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "client/engram_hash.h"
#include "client/memory_tables.h"
#include "gpu/cuda_layer_prefetcher.h"
#include "gpu/kernels.h"

namespace {

using namespace engram;

#define CHECK(cond, what)                                              \
  do {                                                                 \
    if (!(cond)) {                                                     \
      std::fprintf(stderr, "engram-bench-overlap: %s\n", std::string(what).c_str()); \
      return 1;                                                        \
    }                                                                  \
  } while (0)

long Flag(int argc, char** argv, const char* name, long def) {
  const std::string prefix = std::string("--") + name + "=";
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], prefix.c_str(), prefix.size()) == 0) return std::atol(argv[i] + prefix.size());
  }
  return def;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  std::string why;
  if (!gpu::DeviceAvailable(&why)) {
    std::fprintf(stderr, "engram-bench-overlap: no usable GPU: %s\n", why.c_str());
    return 2;
  }
  const long layers = Flag(argc, argv, "layers", 30), hidden = Flag(argc, argv, "hidden", 4096);
  const long gemms = Flag(argc, argv, "gemms", 4), batch = Flag(argc, argv, "batch", 4), seq = Flag(argc, argv, "seq", 1024);
  const long steps = Flag(argc, argv, "steps", 20), pull_us = Flag(argc, argv, "pull_us", 2000);
  const long tokens = batch * seq;

  client::EngramSpec spec;
  spec.engram_vocab_size = {50021, 50023};  // 1.6 M rows per layer table (420 MB).
  spec.max_ngram_size = 3;
  spec.n_head_per_ngram = 8;
  spec.n_embed_per_ngram = 2048;  // dim 256, K = 16 lookups per token.
  spec.layer_ids = {2, 15};
  spec.compressed_vocab_size = 32000;
  auto hasher = client::EngramHasher::Create(spec);
  CHECK(hasher.ok(), hasher.status().ToString());
  const int K = hasher->lookups_per_token();
  const uint32_t dim = 256;
  client::MemoryTables tables(*hasher, DType::kFp8E4M3Ue8m0, dim, 1);
  tables.set_pull_delay(std::chrono::microseconds(pull_us));
  client::LayerPrefetcherOptions o;
  o.max_batch = batch;
  o.max_seq = seq;
  o.max_in_flight = 2 * spec.layer_ids.size();  // This step's tickets and the last step's.
  o.dtype = DType::kFp8E4M3Ue8m0;
  o.dim = dim;
  o.out = client::RowOut::kBF16;
  auto pf = gpu::CreateCudaLayerPrefetcher(&*hasher, tables.io(), o);
  CHECK(pf.ok(), pf.status().ToString());

  cudaStream_t compute;
  CHECK(cudaStreamCreate(&compute) == cudaSuccess, "cudaStreamCreate");
  cublasHandle_t blas;
  CHECK(cublasCreate(&blas) == CUBLAS_STATUS_SUCCESS, "cublasCreate");
  cublasSetStream(blas, compute);
  const long engram_width = long{K} * dim;  // The Engram projection's input width.
  void *x = nullptr, *w = nullptr, *y = nullptr, *we = nullptr;
  float* grads = nullptr;
  CHECK(cudaMalloc(&x, tokens * hidden * 2) == cudaSuccess, "cudaMalloc");
  CHECK(cudaMalloc(&y, tokens * hidden * 2) == cudaSuccess, "cudaMalloc");
  CHECK(cudaMalloc(&w, hidden * hidden * 2) == cudaSuccess, "cudaMalloc");
  CHECK(cudaMalloc(&we, engram_width * hidden * 2) == cudaSuccess, "cudaMalloc");
  CHECK(cudaMalloc(&grads, size_t(tokens) * engram_width * 4) == cudaSuccess, "cudaMalloc");
  cudaMemset(x, 0x3c, tokens * hidden * 2);  // bf16 ~0.0115 everywhere: values do not matter here.
  cudaMemset(w, 0x3c, hidden * hidden * 2);
  cudaMemset(we, 0x3c, engram_width * hidden * 2);
  const float one = 1.0f, zero = 0.0f;
  auto gemm = [&](const void* a, long k, const void* b) {  // y[tokens x hidden] = a[tokens x k] * b[k x hidden]
    return cublasGemmEx(blas, CUBLAS_OP_N, CUBLAS_OP_N, hidden, tokens, k, &one, b, CUDA_R_16BF, hidden, a, CUDA_R_16BF, k,
                        &zero, y, CUDA_R_16BF, hidden, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
  };

  std::mt19937_64 rng(5);
  std::vector<int64_t> toks(tokens);
  enum Way { kBaseline, kPrefetch, kOnDemand };
  std::vector<int> previous;  // Tickets of the last step: released at the start of the next.
  auto step = [&](Way way) -> double {
    for (auto& t : toks) t = static_cast<int64_t>(rng() % 32000);
    const auto t0 = std::chrono::steady_clock::now();
    for (int t : previous) (*pf)->Release(t);  // Waits for last step's pushes (overlapped by now).
    previous.clear();
    std::vector<std::pair<int64_t, int>> tickets;
    if (way == kPrefetch) {
      for (int64_t l : spec.layer_ids) tickets.push_back({l, *(*pf)->Prefetch(l, toks, batch, seq)});
    }
    for (long l = 0; l < layers; ++l) {
      for (long g = 0; g < gemms; ++g) gemm(x, hidden, w);
      if (way == kBaseline || std::find(spec.layer_ids.begin(), spec.layer_ids.end(), l) == spec.layer_ids.end()) continue;
      if (way == kOnDemand) tickets.push_back({l, *(*pf)->Prefetch(l, toks, batch, seq)});
      const int t = std::find_if(tickets.begin(), tickets.end(), [&](auto& p) { return p.first == l; })->second;
      auto rows = (*pf)->Acquire(t, compute);
      if (!rows.ok()) {
        std::fprintf(stderr, "engram-bench-overlap: %s\n", rows.status().ToString().c_str());
        std::exit(1);
      }
      gemm(*rows, engram_width, we);  // The Engram projection reads the gathered rows.
    }
    // Backward (its GEMMs are not simulated): each Engram layer's gradients, pushed async.
    for (auto& [l, t] : tickets) {
      cudaMemsetAsync(grads, 0, size_t(tokens) * engram_width * 4, compute);
      auto pushed = (*pf)->PushGrads(t, grads, compute);
      if (!pushed.ok()) {
        std::fprintf(stderr, "engram-bench-overlap: %s\n", pushed.status().ToString().c_str());
        std::exit(1);
      }
      previous.push_back(t);
    }
    cudaStreamSynchronize(compute);
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  };
  std::vector<double> ms[3];
  for (int i = 0; i < 3; ++i) {  // Warm-up: cuBLAS heuristics, first touches.
    for (Way way : {kBaseline, kPrefetch, kOnDemand}) step(way);
  }
  for (long i = 0; i < steps; ++i) {  // Interleaved, so drift hits all three alike.
    for (Way way : {kBaseline, kPrefetch, kOnDemand}) ms[way].push_back(step(way));
  }
  for (int t : previous) (*pf)->Release(t);
  cudaDeviceProp prop;
  cudaGetDeviceProperties(&prop, 0);
  const double base = Median(ms[kBaseline]), pre = Median(ms[kPrefetch]), dem = Median(ms[kOnDemand]);
  std::printf(
      "{\"bench\":\"overlap\",\"gpu\":\"%s\",\"layers\":%ld,\"gemms_per_layer\":%ld,\"hidden\":%ld,\"tokens\":%ld,"
      "\"engram_layers\":[2,15],\"lookups_per_layer\":%ld,\"row_bytes\":264,\"pull_us\":%ld,\"steps\":%ld,"
      "\"step_ms_median\":{\"baseline\":%.3f,\"prefetch\":%.3f,\"on_demand\":%.3f},"
      "\"overhead_pct\":{\"prefetch\":%.2f,\"on_demand\":%.2f}}\n",
      prop.name, layers, gemms, hidden, tokens, tokens * K, pull_us, steps, base, pre, dem, 100.0 * (pre - base) / base,
      100.0 * (dem - base) / base);
  cublasDestroy(blas);
  cudaFree(x);
  cudaFree(y);
  cudaFree(w);
  cudaFree(we);
  cudaFree(grads);
  cudaStreamDestroy(compute);
  return 0;
}
