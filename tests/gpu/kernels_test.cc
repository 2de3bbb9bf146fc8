// Parity of the CUDA kernels with their CPU twins, on fresh random inputs (never zeros). Every
// test skips, saying why, when no CUDA device is usable (the development VMs have none:
// gpu/device_check.sh runs these on a GPU machine).
#include "gpu/kernels.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

#include "client/dedup.h"
#include "client/engram_hash.h"
#include "engram/numeric.h"
#include "engram/row_codec.h"
#include "gpu/hash_upload.h"

namespace engram::gpu {
namespace {

#define SKIP_WITHOUT_GPU()                                              \
  do {                                                                  \
    std::string why;                                                    \
    if (!DeviceAvailable(&why)) GTEST_SKIP() << "no usable GPU: " << why; \
  } while (0)

#define CUDA_OK(x) ASSERT_EQ((x), cudaSuccess) << #x

template <typename T>
struct DeviceBuffer {
  T* p = nullptr;
  explicit DeviceBuffer(size_t n) { EXPECT_EQ(cudaMalloc(&p, std::max<size_t>(n, 1) * sizeof(T)), cudaSuccess); }
  ~DeviceBuffer() { cudaFree(p); }
  void Put(const std::vector<T>& v) { ASSERT_EQ(cudaMemcpy(p, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess); }
  std::vector<T> Get(size_t n) const {
    std::vector<T> v(n);
    EXPECT_EQ(cudaMemcpy(v.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
    return v;
  }
};

// The DeepSeek-V4.1-Flash shape (max n-gram 3, 8 heads) with a compression map holding
// negative entries, random multipliers drawn by the reference algorithm (seeded).
client::EngramHasher Hasher() {
  client::EngramSpec spec;
  spec.engram_vocab_size = {646400, 646400};
  spec.max_ngram_size = 3;
  spec.n_head_per_ngram = 8;
  spec.n_embed_per_ngram = 512;
  spec.layer_ids = {1, 15};
  spec.seed = 12345;
  std::mt19937_64 rng(1);
  spec.compression.resize(50000);
  for (auto& c : spec.compression) c = static_cast<int64_t>(rng() % 40000);
  spec.compressed_vocab_size = 40000;
  auto h = client::EngramHasher::Create(spec);
  EXPECT_TRUE(h.ok()) << h.status().ToString();
  return std::move(h).value();
}

TEST(GpuKernelsTest, HashMatchesTheCpuHasherBitForBit) {
  SKIP_WITHOUT_GPU();
  const client::EngramHasher h = Hasher();
  UploadedLayer up;
  CUDA_OK(UploadedLayer::Create(h, 15, &up));
  const size_t batch = 4, seq = 2048;
  std::mt19937_64 rng(7);
  std::vector<int64_t> tokens(batch * seq), left(batch * 2);
  for (auto& t : tokens) t = static_cast<int64_t>(rng() % 50000) - (rng() % 50 == 0 ? 60000 : 0);  // Some negative.
  for (auto& t : left) t = static_cast<int64_t>(rng() % 50000);
  const size_t k = static_cast<size_t>(h.lookups_per_token());
  for (bool with_left : {false, true}) {
    std::vector<uint64_t> want(batch * seq * k);
    ASSERT_TRUE(h.Hash(15, tokens, batch, seq, with_left ? std::span<const int64_t>(left) : std::span<const int64_t>(),
                       want.data()).ok());
    DeviceBuffer<int64_t> d_tokens(tokens.size()), d_left(left.size());
    DeviceBuffer<uint64_t> d_out(want.size());
    DeviceBuffer<int> d_bad(1);
    d_tokens.Put(tokens);
    d_left.Put(left);
    d_bad.Put({0});
    CUDA_OK(LaunchHash(up.view(), d_tokens.p, with_left ? d_left.p : nullptr, batch, seq, d_out.p, d_bad.p, nullptr));
    CUDA_OK(cudaDeviceSynchronize());
    EXPECT_EQ(d_bad.Get(1)[0], 0);
    EXPECT_EQ(d_out.Get(want.size()), want) << (with_left ? "with" : "without") << " left context";
  }
  // An id outside the compression map is reported, as the CPU hasher refuses it.
  tokens[5] = 50000;
  DeviceBuffer<int64_t> d_tokens(tokens.size());
  DeviceBuffer<uint64_t> d_out(batch * seq * k);
  DeviceBuffer<int> d_bad(1);
  d_tokens.Put(tokens);
  d_bad.Put({0});
  CUDA_OK(LaunchHash(up.view(), d_tokens.p, nullptr, batch, seq, d_out.p, d_bad.p, nullptr));
  CUDA_OK(cudaDeviceSynchronize());
  EXPECT_EQ(d_bad.Get(1)[0], 1);
}

TEST(GpuKernelsTest, DedupAndSegmentSumMatchTheCpu) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(3);
  const size_t n = 65536;
  const uint32_t dim = 64;
  std::vector<uint64_t> ids(n);
  for (auto& id : ids) id = rng() % 20000 + (uint64_t{1} << 40);  // Many repeats, wide values.
  std::vector<uint64_t> want_unique;
  std::vector<uint32_t> want_inverse;
  client::Deduplicate(ids, &want_unique, &want_inverse);
  std::normal_distribution<float> g(0, 1);
  std::vector<float> grads(n * dim);
  for (auto& x : grads) x = g(rng);
  std::vector<float> want_sum(want_unique.size() * dim);
  client::SumByInverse(want_inverse, want_unique.size(), dim, grads.data(), want_sum.data());

  Dedup dd;
  CUDA_OK(Dedup::Create(n, &dd));
  DeviceBuffer<uint64_t> d_ids(n), d_unique(n);
  DeviceBuffer<uint32_t> d_inverse(n), d_count(1);
  DeviceBuffer<float> d_grads(grads.size()), d_sum(n * dim);
  d_ids.Put(ids);
  d_grads.Put(grads);
  CUDA_OK(dd.Run(d_ids.p, n, d_unique.p, d_inverse.p, d_count.p, nullptr));
  CUDA_OK(LaunchSegmentSum(d_grads.p, dd.sorted_positions(), dd.segment_starts(), d_count.p, n, dim, d_sum.p, nullptr));
  CUDA_OK(cudaDeviceSynchronize());
  const uint32_t count = d_count.Get(1)[0];
  ASSERT_EQ(count, want_unique.size());
  EXPECT_EQ(d_unique.Get(count), want_unique);
  EXPECT_EQ(d_inverse.Get(n), want_inverse);
  const auto got = d_sum.Get(count * dim);
  EXPECT_EQ(std::memcmp(got.data(), want_sum.data(), got.size() * sizeof(float)), 0) << "same order, same bits";
}

// Rows at rest of every trainable and serving format, gathered into the Engram layout and
// converted, against row_codec's DecodeRow (and F32ToBf16 for bf16 output).
TEST(GpuKernelsTest, GatherConvertsEveryRowFormatLikeTheCpu) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(9);
  std::normal_distribution<float> g(0, 3);
  const uint32_t dim = 256;
  const size_t unique = 500, n = 4 * 64 * 16;  // B=4, T=64, K=16.
  for (DType dt : {DType::kF32, DType::kBF16, DType::kF16, DType::kFp8E4M3Ue8m0}) {
    const size_t vb = ValueBytes(dt, dim);
    std::vector<uint8_t> rows(unique * vb);
    std::vector<float> v(dim);
    for (size_t u = 0; u < unique; ++u) {
      for (auto& x : v) x = g(rng);
      EncodeRow(dt, dim, v.data(), rows.data() + u * vb);
    }
    std::vector<uint32_t> inverse(n);
    for (auto& i : inverse) i = static_cast<uint32_t>(rng() % unique);
    std::vector<float> want(n * dim);
    for (size_t i = 0; i < n; ++i) DecodeRow(dt, dim, rows.data() + size_t{inverse[i]} * vb, want.data() + i * dim);
    DeviceBuffer<uint8_t> d_rows(rows.size());
    DeviceBuffer<uint32_t> d_inv(n);
    DeviceBuffer<float> d_f32(n * dim);
    DeviceBuffer<uint16_t> d_bf16(n * dim);
    d_rows.Put(rows);
    d_inv.Put(inverse);
    CUDA_OK(LaunchGather(dt, dim, d_rows.p, d_inv.p, n, OutType::kF32, d_f32.p, nullptr));
    CUDA_OK(LaunchGather(dt, dim, d_rows.p, d_inv.p, n, OutType::kBF16, d_bf16.p, nullptr));
    CUDA_OK(cudaDeviceSynchronize());
    const auto got = d_f32.Get(n * dim);
    EXPECT_EQ(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)), 0) << DTypeName(dt);
    const auto got16 = d_bf16.Get(n * dim);
    size_t bad = 0;
    for (size_t e = 0; e < got16.size(); ++e) bad += got16[e] != F32ToBf16(want[e]);
    EXPECT_EQ(bad, 0u) << DTypeName(dt) << " -> bf16";
  }
  EXPECT_EQ(LaunchGather(DType::kBytes, 8, nullptr, nullptr, 1, OutType::kF32, nullptr, nullptr), cudaErrorInvalidValue);
}

}  // namespace
}  // namespace engram::gpu
