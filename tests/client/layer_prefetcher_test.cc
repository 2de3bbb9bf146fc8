// LayerPrefetcher's CPU engine: rows land in [B][T][K][dim] as the hash and the table say,
// gradients come back summed per unique row, tickets are a bounded ring; and through a real
// engram-server with TableRowIo.
#include "client/layer_prefetcher.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>

#include "../testing/layer_tables.h"
#include "../testing/server_process.h"
#include "client/engram_prefetch.h"
#include "client/memory_tables.h"
#include "engram/numeric.h"

namespace engram::client {
namespace {

EngramSpec SmallSpec() {
  EngramSpec spec;
  spec.engram_vocab_size = {1009, 1013};
  spec.n_embed_per_ngram = 64;
  spec.n_head_per_ngram = 2;  // dim 32, K = 4 lookups per token.
  spec.layer_ids = {2, 5};
  spec.compressed_vocab_size = 500;
  return spec;
}

std::vector<int64_t> Tokens(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int64_t> t(n);
  for (auto& x : t) x = static_cast<int64_t>(rng() % 40);  // Few ids: repeated n-grams, duplicate rows.
  return t;
}

class LayerPrefetcherTest : public ::testing::TestWithParam<RowOut> {};
INSTANTIATE_TEST_SUITE_P(Out, LayerPrefetcherTest, ::testing::Values(RowOut::kF32, RowOut::kBF16),
                         [](const auto& info) { return info.param == RowOut::kF32 ? "F32" : "BF16"; });

TEST_P(LayerPrefetcherTest, RowsLandInTokenLayoutAndGradientsComeBackSummedPerUniqueRow) {
  auto hasher = EngramHasher::Create(SmallSpec());
  ASSERT_TRUE(hasher.ok());
  MemoryTables tables(*hasher, DType::kFp8E4M3Ue8m0, 32, 7);
  LayerPrefetcherOptions o;
  o.max_batch = 4;
  o.max_seq = 64;
  o.max_in_flight = 2;
  o.dtype = DType::kFp8E4M3Ue8m0;
  o.dim = 32;
  o.out = GetParam();
  auto pf = CreateCpuLayerPrefetcher(&*hasher, tables.io(), o);
  ASSERT_TRUE(pf.ok()) << pf.status().ToString();
  EXPECT_FALSE((*pf)->on_device());
  const size_t B = 3, T = 50, K = 4, dim = 32;
  std::vector<int64_t> tokens = Tokens(B * T, 1);
  const std::vector<int64_t> original = tokens;
  auto t5 = (*pf)->Prefetch(5, tokens, B, T);
  ASSERT_TRUE(t5.ok());
  std::fill(tokens.begin(), tokens.end(), 3);  // The caller's buffer is free at once.
  auto rows = (*pf)->Acquire(*t5, nullptr);
  ASSERT_TRUE(rows.ok()) << rows.status().ToString();
  std::vector<uint64_t> ids(B * T * K);
  ASSERT_TRUE(hasher->Hash(5, original, B, T, {}, ids.data()).ok());
  for (size_t i = 0; i < ids.size(); ++i) {
    const std::vector<float> want = tables.Row(5, ids[i]);
    for (size_t c = 0; c < dim; ++c) {
      const float got = GetParam() == RowOut::kF32 ? static_cast<const float*>(*rows)[i * dim + c]
                                                   : Bf16ToF32(static_cast<const uint16_t*>(*rows)[i * dim + c]);
      const float expect = GetParam() == RowOut::kF32 ? want[c] : Bf16ToF32(F32ToBf16(want[c]));
      ASSERT_EQ(got, expect) << "lookup " << i << " value " << c;
    }
  }
  // Backward: one gradient per lookup; each unique row gets their sum in one push (SGD, lr 1).
  std::vector<float> grads(ids.size() * dim);
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(-1, 1);
  for (auto& g : grads) g = u(rng);
  std::map<uint64_t, std::vector<double>> sums;
  for (size_t i = 0; i < ids.size(); ++i) {
    auto& s = sums[ids[i]];
    s.resize(dim);
    for (size_t c = 0; c < dim; ++c) s[c] += grads[i * dim + c];
  }
  std::map<uint64_t, std::vector<float>> before;
  for (const auto& [id, s] : sums) before[id] = tables.Row(5, id);
  auto pushed = (*pf)->PushGrads(*t5, grads.data(), nullptr);
  ASSERT_TRUE(pushed.ok());
  std::fill(grads.begin(), grads.end(), 100.0f);  // Summed before PushGrads returned.
  ASSERT_TRUE(pushed->get().ok());
  EXPECT_EQ((*pf)->PushGrads(*t5, grads.data(), nullptr).status().code(), Code::kFailedPrecondition);  // Once per ticket.
  (*pf)->Release(*t5);
  EXPECT_LT(sums.size(), ids.size()) << "the tokens repeat: some rows are looked up more than once";
  for (const auto& [id, s] : sums) {
    // FP8 storage rounds: compare with the tolerance of one re-encode of the expected value.
    const std::vector<float> now = tables.Row(5, id);
    for (size_t c = 0; c < dim; ++c) {
      const float expect = before[id][c] - static_cast<float>(s[c]);
      EXPECT_NEAR(now[c], expect, std::fabs(expect) * 0.07f + 0.02f) << "row " << id << " value " << c;
    }
  }
}

TEST(LayerPrefetcherCpuTest, TicketsAreABoundedRingAndBadInputsAreRefused) {
  auto hasher = EngramHasher::Create(SmallSpec());
  ASSERT_TRUE(hasher.ok());
  MemoryTables tables(*hasher, DType::kF32, 32, 9);
  LayerPrefetcherOptions o;
  o.max_batch = 2;
  o.max_seq = 8;
  o.max_in_flight = 2;
  o.dim = 32;
  auto pf = CreateCpuLayerPrefetcher(&*hasher, tables.io(), o);
  ASSERT_TRUE(pf.ok());
  const std::vector<int64_t> tokens = Tokens(16, 2);
  EXPECT_TRUE((*pf)->Prefetch(3, tokens, 2, 8).status().IsInvalidArgument());   // No Engram at layer 3.
  EXPECT_TRUE((*pf)->Prefetch(2, tokens, 4, 4).status().IsInvalidArgument());   // Batch beyond the buffers.
  EXPECT_TRUE((*pf)->Prefetch(2, tokens, 2, 7).status().IsInvalidArgument());   // Shape and tokens disagree.
  EXPECT_TRUE((*pf)->Acquire(9, nullptr).status().IsInvalidArgument());         // No such ticket.
  auto a = (*pf)->Prefetch(2, tokens, 2, 8);
  auto b = (*pf)->Prefetch(5, tokens, 2, 8);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE(*a, *b);
  // A third waits until a ticket is released.
  auto third = std::async(std::launch::async, [&] { return (*pf)->Prefetch(2, tokens, 2, 8); });
  EXPECT_EQ(third.wait_for(std::chrono::milliseconds(200)), std::future_status::timeout);
  (*pf)->Release(*a);
  auto c = third.get();
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(*c, *a);  // The ring reuses the released ticket's buffers.
  EXPECT_TRUE((*pf)->Acquire(*c, nullptr).ok());
  (*pf)->Release(*b);
  (*pf)->Release(*c);
  // A pull that fails comes back from Acquire, with its reason.
  RowIo failing = tables.io();
  failing.pull = [](int64_t, std::span<const uint64_t>, uint8_t*) { return Status::Unavailable("server 2 is down"); };
  auto pf2 = CreateCpuLayerPrefetcher(&*hasher, failing, o);
  ASSERT_TRUE(pf2.ok());
  auto t = (*pf2)->Prefetch(2, tokens, 2, 8);
  ASSERT_TRUE(t.ok());
  const auto got = (*pf2)->Acquire(*t, nullptr);
  EXPECT_TRUE(got.status().IsUnavailable());
  EXPECT_NE(got.status().message().find("server 2 is down"), std::string::npos);
  EXPECT_FALSE((*pf2)->PushGrads(*t, nullptr, nullptr).ok());
  (*pf2)->Release(*t);
  o.dim = 0;
  EXPECT_TRUE(CreateCpuLayerPrefetcher(&*hasher, tables.io(), o).status().IsInvalidArgument());
}

// Through a real daemon: the rows TableRowIo pulls are the table's, and a step's pushes land.
TEST(LayerPrefetcherCpuTest, PullsAndPushesGoThroughTheServer) {
  auto server = testing::ServerProcess::Start(0);
  ClientOptions co;
  co.servers = {server->address()};
  auto c = Client::Connect(co);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  const EngramSpec spec = SmallSpec();
  auto hasher = EngramHasher::Create(spec);
  ASSERT_TRUE(hasher.ok());
  ASSERT_TRUE(testing::CreateSgdLayerTables(**c, *hasher, "e", 32, 2).ok());
  auto io = TableRowIo(c->get(), *hasher, "e");
  ASSERT_TRUE(io.ok()) << io.status().ToString();
  LayerPrefetcherOptions o;
  o.max_batch = 2;
  o.max_seq = 16;
  o.dim = 32;
  auto pf = CreateCpuLayerPrefetcher(&*hasher, *io, o);
  ASSERT_TRUE(pf.ok());
  const std::vector<int64_t> tokens = Tokens(32, 4);
  for (int step = 0; step < 2; ++step) {
    auto t = (*pf)->Prefetch(2, tokens, 2, 16);
    ASSERT_TRUE(t.ok());
    auto rows = (*pf)->Acquire(*t, nullptr);
    ASSERT_TRUE(rows.ok()) << rows.status().ToString();
    std::vector<uint64_t> ids(2 * 16 * 4);
    ASSERT_TRUE(hasher->Hash(2, tokens, 2, 16, {}, ids.data()).ok());
    for (size_t i = 0; i < ids.size(); ++i) {
      // After `step` SGD steps of gradient 1 per lookup, a row is -step x its lookups.
      const float hits = static_cast<float>(std::count(ids.begin(), ids.end(), ids[i]));
      ASSERT_EQ(static_cast<const float*>(*rows)[i * 32], -step * hits) << "step " << step << " lookup " << i;
    }
    std::vector<float> grads(ids.size() * 32, 1.0f);
    auto pushed = (*pf)->PushGrads(*t, grads.data(), nullptr);
    ASSERT_TRUE(pushed.ok());
    ASSERT_TRUE(pushed->get().ok());
    (*pf)->Release(*t);
  }
  EXPECT_TRUE(TableRowIo(c->get(), *hasher, "missing").status().IsNotFound());
}

}  // namespace
}  // namespace engram::client
