// engram-bench-gpu: times the GPU kernels (issue 7, part 4) against a device-to-device copy of
// the same bytes measured in the same run. Prints one JSON object; exits 2 without a GPU.
//   hash      8 x 4096 tokens of the reference config's layer 15 -> row ids/s
//   dedup     the 524,288 row ids those tokens make -> ids/s
//   gather    those lookups from 2^18 unique FP8 E4M3 + UE8M0 rows (264 B) into bf16
//             [B][T][K][256]: output bytes per second, and the same for a cudaMemcpy device to
//             device of those bytes (the ratio is gather / copy)
//   segsum    f32 gradients of the same shape summed per unique row -> GB/s of input
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "client/engram_hash.h"
#include "engram/row_codec.h"
#include "gpu/hash_upload.h"
#include "gpu/kernels.h"

namespace {

using namespace engram;

#define CHECK_CUDA(x)                                                                   \
  do {                                                                                  \
    cudaError_t e_ = (x);                                                               \
    if (e_ != cudaSuccess) {                                                            \
      std::fprintf(stderr, "engram-bench-gpu: %s: %s\n", #x, cudaGetErrorString(e_)); \
      return 1;                                                                         \
    }                                                                                   \
  } while (0)

// Median milliseconds of `reps` runs of `f` on the default stream.
template <typename F>
float TimeMs(int reps, F&& f) {
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  std::vector<float> ms;
  f();  // Warm-up.
  for (int i = 0; i < reps; ++i) {
    cudaEventRecord(a);
    f();
    cudaEventRecord(b);
    cudaEventSynchronize(b);
    float t = 0;
    cudaEventElapsedTime(&t, a, b);
    ms.push_back(t);
  }
  std::sort(ms.begin(), ms.end());
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return ms[ms.size() / 2];
}

}  // namespace

int main() {
  std::string why;
  if (!gpu::DeviceAvailable(&why)) {
    std::fprintf(stderr, "engram-bench-gpu: no usable GPU: %s\n", why.c_str());
    return 2;
  }
  cudaDeviceProp prop{};
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  client::EngramSpec spec;
  spec.engram_vocab_size = {646400, 646400};
  spec.layer_ids = {1, 15};
  spec.compressed_vocab_size = 129280;
  auto h = client::EngramHasher::Create(spec);
  if (!h.ok()) return std::fprintf(stderr, "%s\n", h.status().ToString().c_str()), 1;
  gpu::UploadedLayer up;
  CHECK_CUDA(gpu::UploadedLayer::Create(*h, 15, &up));
  const size_t batch = 8, seq = 4096, k = static_cast<size_t>(up.lookups_per_token()), n = batch * seq * k;
  std::mt19937_64 rng(1);
  std::vector<int64_t> tokens(batch * seq);
  for (auto& t : tokens) t = static_cast<int64_t>(rng() % 129280);
  int64_t* d_tokens;
  uint64_t *d_ids, *d_unique;
  uint32_t *d_inverse, *d_count;
  int* d_bad;
  CHECK_CUDA(cudaMalloc(&d_tokens, tokens.size() * 8));
  CHECK_CUDA(cudaMalloc(&d_ids, n * 8));
  CHECK_CUDA(cudaMalloc(&d_unique, n * 8));
  CHECK_CUDA(cudaMalloc(&d_inverse, n * 4));
  CHECK_CUDA(cudaMalloc(&d_count, 4));
  CHECK_CUDA(cudaMalloc(&d_bad, 4));
  CHECK_CUDA(cudaMemcpy(d_tokens, tokens.data(), tokens.size() * 8, cudaMemcpyHostToDevice));
  const float hash_ms = TimeMs(20, [&] { gpu::LaunchHash(up.view(), d_tokens, nullptr, batch, seq, d_ids, d_bad, nullptr); });
  gpu::Dedup dd;
  CHECK_CUDA(gpu::Dedup::Create(n, &dd));
  const float dedup_ms = TimeMs(20, [&] { dd.Run(d_ids, n, d_unique, d_inverse, d_count, nullptr); });

  const uint32_t dim = 256;
  const size_t unique = size_t{1} << 18, vb = ValueBytes(DType::kFp8E4M3Ue8m0, dim);
  std::vector<uint8_t> rows(unique * vb);
  std::vector<float> v(dim);
  std::normal_distribution<float> g(0, 1);
  for (size_t u = 0; u < unique; ++u) {
    for (auto& x : v) x = g(rng);
    EncodeRow(DType::kFp8E4M3Ue8m0, dim, v.data(), rows.data() + u * vb);
  }
  std::vector<uint32_t> inverse(n);
  for (auto& i : inverse) i = static_cast<uint32_t>(rng() % unique);
  uint8_t* d_rows;
  uint32_t* d_inv;
  void *d_out, *d_copy;
  const size_t out_bytes = n * dim * 2;
  CHECK_CUDA(cudaMalloc(&d_rows, rows.size()));
  CHECK_CUDA(cudaMalloc(&d_inv, n * 4));
  CHECK_CUDA(cudaMalloc(&d_out, out_bytes));
  CHECK_CUDA(cudaMalloc(&d_copy, out_bytes));
  CHECK_CUDA(cudaMemcpy(d_rows, rows.data(), rows.size(), cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(d_inv, inverse.data(), n * 4, cudaMemcpyHostToDevice));
  const float gather_ms = TimeMs(20, [&] {
    gpu::LaunchGather(DType::kFp8E4M3Ue8m0, dim, d_rows, d_inv, n, gpu::OutType::kBF16, d_out, nullptr);
  });
  const float copy_ms = TimeMs(20, [&] { cudaMemcpyAsync(d_copy, d_out, out_bytes, cudaMemcpyDeviceToDevice, nullptr); });

  // Segment-sum of f32 gradients of the per-head shape (dim 64) over the dedup of the hash.
  const uint32_t gdim = 64;
  float *d_grads, *d_sum;
  CHECK_CUDA(cudaMalloc(&d_grads, n * gdim * 4));
  CHECK_CUDA(cudaMalloc(&d_sum, n * gdim * 4));
  CHECK_CUDA(cudaMemset(d_grads, 0x3c, n * gdim * 4));  // 0x3c3c3c3c: a finite float.
  CHECK_CUDA(dd.Run(d_ids, n, d_unique, d_inverse, d_count, nullptr));
  const float seg_ms = TimeMs(20, [&] {
    gpu::LaunchSegmentSum(d_grads, dd.sorted_positions(), dd.segment_starts(), d_count, n, gdim, d_sum, nullptr);
  });
  CHECK_CUDA(cudaDeviceSynchronize());
  uint32_t count = 0;
  CHECK_CUDA(cudaMemcpy(&count, d_count, 4, cudaMemcpyDeviceToHost));
  std::printf(
      "{\"gpu\": \"%s\", \"hash_ids_per_s\": %.4g, \"dedup_ids_per_s\": %.4g, \"unique_of_%zu\": %u, "
      "\"gather_gb_per_s\": %.4g, \"d2d_copy_gb_per_s\": %.4g, \"gather_vs_copy\": %.3f, \"segsum_gb_per_s\": %.4g}\n",
      prop.name, n / (hash_ms * 1e-3), n / (dedup_ms * 1e-3), n, count, out_bytes / (gather_ms * 1e6),
      out_bytes / (copy_ms * 1e6), copy_ms / gather_ms,
      n * gdim * 4.0 / (seg_ms * 1e6));
  return 0;
}
