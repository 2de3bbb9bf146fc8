// The CUDA engine of LayerPrefetcher against the CPU engine on fresh random tables and tokens:
// the same rows land, bit for bit, and the same pushes reach the tables. Skips without a GPU.
#include "gpu/cuda_layer_prefetcher.h"

#include <gtest/gtest.h>
#include <cuda_runtime.h>

#include <cstring>
#include <random>
#include <vector>

#include "client/memory_tables.h"
#include "gpu/kernels.h"

namespace engram::gpu {
namespace {

client::EngramSpec Spec() {
  client::EngramSpec spec;
  spec.engram_vocab_size = {20011, 20021};
  spec.max_ngram_size = 3;
  spec.n_head_per_ngram = 4;
  spec.n_embed_per_ngram = 256;  // dim 64, K = 8.
  spec.layer_ids = {2, 15};
  spec.seed = 7;
  spec.compressed_vocab_size = 4000;  // Token ids below it map to themselves.
  return spec;
}

class CudaLayerPrefetcherTest : public ::testing::TestWithParam<client::RowOut> {};
INSTANTIATE_TEST_SUITE_P(Out, CudaLayerPrefetcherTest, ::testing::Values(client::RowOut::kF32, client::RowOut::kBF16),
                         [](const auto& info) { return info.param == client::RowOut::kF32 ? "F32" : "BF16"; });

TEST_P(CudaLayerPrefetcherTest, MatchesTheCpuEngineBitForBit) {
  std::string why;
  if (!DeviceAvailable(&why)) GTEST_SKIP() << "no usable GPU: " << why;
  auto hasher = client::EngramHasher::Create(Spec());
  ASSERT_TRUE(hasher.ok());
  std::random_device rd;
  const uint64_t seed = (uint64_t{rd()} << 32) | rd();
  client::MemoryTables cpu_tables(*hasher, DType::kFp8E4M3Ue8m0, 64, seed), gpu_tables(*hasher, DType::kFp8E4M3Ue8m0, 64, seed);
  client::LayerPrefetcherOptions o;
  o.max_batch = 4;
  o.max_seq = 512;
  o.max_in_flight = 3;
  o.dtype = DType::kFp8E4M3Ue8m0;
  o.dim = 64;
  o.out = GetParam();
  auto cpu = client::CreateCpuLayerPrefetcher(&*hasher, cpu_tables.io(), o);
  auto gpu = CreateCudaLayerPrefetcher(&*hasher, gpu_tables.io(), o);
  ASSERT_TRUE(cpu.ok() && gpu.ok()) << gpu.status().ToString();
  EXPECT_TRUE((*gpu)->on_device());
  cudaStream_t compute;
  ASSERT_EQ(cudaStreamCreate(&compute), cudaSuccess);
  std::mt19937_64 rng(seed);
  const size_t B = 3, T = 500, K = 8, dim = 64, ob = GetParam() == client::RowOut::kF32 ? 4 : 2;
  const size_t n = B * T * K;
  float* d_grads = nullptr;
  ASSERT_EQ(cudaMalloc(&d_grads, n * dim * 4), cudaSuccess);
  for (int step = 0; step < 3; ++step) {  // Tickets are reused: the ring wraps.
    for (int64_t layer : {2, 15}) {
      std::vector<int64_t> tokens(B * T);
      for (auto& t : tokens) t = static_cast<int64_t>(rng() % 3000);
      auto tc = (*cpu)->Prefetch(layer, tokens, B, T);
      auto tg = (*gpu)->Prefetch(layer, tokens, B, T);
      ASSERT_TRUE(tc.ok() && tg.ok());
      auto rc = (*cpu)->Acquire(*tc, nullptr);
      auto rg = (*gpu)->Acquire(*tg, compute);
      ASSERT_TRUE(rc.ok() && rg.ok()) << rg.status().ToString();
      std::vector<uint8_t> got(n * dim * ob);
      ASSERT_EQ(cudaMemcpyAsync(got.data(), *rg, got.size(), cudaMemcpyDeviceToHost, compute), cudaSuccess);
      ASSERT_EQ(cudaStreamSynchronize(compute), cudaSuccess);
      ASSERT_EQ(std::memcmp(got.data(), *rc, got.size()), 0) << "step " << step << " layer " << layer;
      std::vector<float> grads(n * dim);
      std::normal_distribution<float> g(0, 1);
      for (auto& x : grads) x = g(rng);
      ASSERT_EQ(cudaMemcpyAsync(d_grads, grads.data(), grads.size() * 4, cudaMemcpyHostToDevice, compute), cudaSuccess);
      auto pc = (*cpu)->PushGrads(*tc, grads.data(), nullptr);
      auto pg = (*gpu)->PushGrads(*tg, d_grads, compute);
      ASSERT_TRUE(pc.ok() && pg.ok()) << pg.status().ToString();
      ASSERT_TRUE(pc->get().ok());
      ASSERT_TRUE(pg->get().ok());
      (*cpu)->Release(*tc);
      (*gpu)->Release(*tg);
    }
  }
  // Both tables took the same pushes: every row the steps touched is the same.
  std::vector<uint64_t> probe(4096);
  for (auto& p : probe) p = rng() % hasher->layer(2)->table_rows;
  for (uint64_t r : probe) ASSERT_EQ(cpu_tables.Row(2, r), gpu_tables.Row(2, r)) << "row " << r;
  EXPECT_TRUE((*gpu)->Prefetch(3, std::vector<int64_t>(4), 2, 2).status().IsInvalidArgument());
  cudaFree(d_grads);
  cudaStreamDestroy(compute);
}

TEST(CudaLayerPrefetcherFactoryTest, FallsBackToTheCpuEngineWithoutADevice) {
  auto hasher = client::EngramHasher::Create(Spec());
  ASSERT_TRUE(hasher.ok());
  client::MemoryTables tables(*hasher, DType::kF32, 64, 1);
  client::LayerPrefetcherOptions o;
  o.max_batch = 1;
  o.max_seq = 8;
  o.dim = 64;
  auto pf = CreateLayerPrefetcher(&*hasher, tables.io(), o);
  ASSERT_TRUE(pf.ok()) << pf.status().ToString();
  std::string why;
  EXPECT_EQ((*pf)->on_device(), DeviceAvailable(&why)) << why;
  if (!DeviceAvailable(nullptr)) {
    EXPECT_EQ(CreateCudaLayerPrefetcher(&*hasher, tables.io(), o).status().code(), Code::kFailedPrecondition);
  }
}

}  // namespace
}  // namespace engram::gpu
