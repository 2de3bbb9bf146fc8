// EngramPrefetcher against a real engram-server: hashing, pulls in flight, layout, PushGrads.
#include "client/engram_prefetch.h"

#include <gtest/gtest.h>

#include "../testing/layer_tables.h"
#include "../testing/server_process.h"

namespace engram::client {
namespace {

// Both completion modes: on the prefetcher's thread (default) and on the caller's.
class EngramPrefetchModeTest : public ::testing::TestWithParam<bool> {};
INSTANTIATE_TEST_SUITE_P(Completion, EngramPrefetchModeTest, ::testing::Values(true, false),
                         [](const auto& info) { return info.param ? "Background" : "Caller"; });

TEST_P(EngramPrefetchModeTest, RowsLandInTokenLayoutAndGradientsAreSummedPerUniqueRow) {
  auto server = testing::ServerProcess::Start(0);
  ClientOptions o;
  o.servers = {server->address()};
  auto c = Client::Connect(o);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EngramSpec spec;
  spec.engram_vocab_size = {101, 103};
  spec.n_embed_per_ngram = 8;
  spec.n_head_per_ngram = 2;  // dim 4, K = 4 lookups per token.
  spec.layer_ids = {1, 3};
  spec.compressed_vocab_size = 50;
  auto hasher = EngramHasher::Create(spec);
  ASSERT_TRUE(hasher.ok());
  ASSERT_TRUE(testing::CreateSgdLayerTables(**c, *hasher, "e", 4, 2).ok());
  PrefetchOptions po;
  po.background = GetParam();
  auto pf = EngramPrefetcher::Create(c->get(), spec, "e", po);
  ASSERT_TRUE(pf.ok()) << pf.status().ToString();
  std::vector<int64_t> tokens = {5, 6, 5, 6, 5, 6};  // Repeated n-grams: duplicate rows.
  auto h = (*pf)->Prefetch(3, tokens, 2, 3);
  ASSERT_TRUE(h.ok());
  const std::vector<int64_t> original = tokens;
  // The caller may reuse its buffer at once: the pushes below must still hit the rows of
  // `original`, which the check after them verifies.
  std::fill(tokens.begin(), tokens.end(), 17);
  std::vector<float> grads0(4 * 6 * 4, 1.0f);
  EXPECT_EQ((*h)->PushGrads(grads0.data()).code(), Code::kFailedPrecondition);  // Not waited yet.
  ASSERT_TRUE((*h)->Wait().ok());
  tokens = original;
  EXPECT_LT((*h)->num_unique_rows(), (*h)->num_lookups());
  std::vector<float> grads((*h)->num_lookups() * 4, 1.0f);
  ASSERT_TRUE((*h)->PushGrads(grads.data()).ok());
  EXPECT_FALSE((*h)->PushGrads(grads.data()).ok());  // Once per handle.

  // After one SGD step with lr 1, each row equals minus the number of lookups that hit it.
  std::vector<uint64_t> ids(tokens.size() * 4);
  ASSERT_TRUE(hasher->Hash(3, tokens, 2, 3, {}, ids.data()).ok());
  auto again = (*pf)->Prefetch(3, tokens, 2, 3);
  ASSERT_TRUE(again.ok());
  ASSERT_TRUE((*again)->Wait().ok());
  for (size_t i = 0; i < ids.size(); ++i) {
    const float hits = static_cast<float>(std::count(ids.begin(), ids.end(), ids[i]));
    for (int c2 = 0; c2 < 4; ++c2) EXPECT_EQ((*again)->rows()[i * 4 + c2], -hits) << i;
  }
  // The same step again, pushed on a helper thread; the handle goes away before it lands.
  auto pushed = (*again)->PushGradsAsync(grads.data());
  EXPECT_EQ((*again)->PushGradsAsync(grads.data()).get().code(), Code::kFailedPrecondition);
  again->reset();
  ASSERT_TRUE(pushed.get().ok());
  auto third = (*pf)->Prefetch(3, tokens, 2, 3);
  ASSERT_TRUE(third.ok());
  ASSERT_TRUE((*third)->Wait().ok());
  for (size_t i = 0; i < ids.size(); ++i) {
    const float hits = static_cast<float>(std::count(ids.begin(), ids.end(), ids[i]));
    EXPECT_EQ((*third)->rows()[i * 4], -2 * hits) << i;
  }
  EXPECT_TRUE((*pf)->Prefetch(2, tokens, 2, 3).status().IsInvalidArgument());  // No Engram at layer 2.
  EXPECT_TRUE((*pf)->Prefetch(3, tokens, 2, 2).status().IsInvalidArgument());  // Shape mismatch.
  // Handles dropped without Wait (and a prefetcher destroyed after them) neither hang nor leak.
  for (int i = 0; i < 8; ++i) EXPECT_TRUE((*pf)->Prefetch(1, tokens, 2, 3).ok());
}

TEST(EngramPrefetchTest, MismatchedTableIsRefused) {
  auto server = testing::ServerProcess::Start(0);
  ClientOptions o;
  o.servers = {server->address()};
  auto c = Client::Connect(o);
  ASSERT_TRUE(c.ok());
  EngramSpec spec;
  spec.engram_vocab_size = {101, 103};
  spec.n_embed_per_ngram = 8;
  spec.n_head_per_ngram = 2;
  spec.layer_ids = {1};
  spec.compressed_vocab_size = 50;
  TableSchema s;
  s.name = "e_layer1";
  s.num_rows = 10;  // Not the spec's row count.
  s.dim = 4;
  ASSERT_TRUE((*c)->CreateTable(s, 1).ok());
  EXPECT_EQ(EngramPrefetcher::Create(c->get(), spec, "e").status().code(), Code::kFailedPrecondition);
  EXPECT_TRUE(EngramPrefetcher::Create(c->get(), spec, "missing").status().IsNotFound());
}

}  // namespace
}  // namespace engram::client
