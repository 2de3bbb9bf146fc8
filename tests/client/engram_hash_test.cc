#include "client/engram_hash.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>

#include "../testing/vectors.h"

namespace engram::client {
namespace {

using nlohmann::json;

EngramHasher HasherFor(const json& spec_json) {
  auto spec = EngramSpec::FromJson(spec_json.dump());
  auto h = spec.ok() ? EngramHasher::Create(*spec) : StatusOr<EngramHasher>(spec.status());
  if (!h.ok()) {  // Every test here needs the hasher; stop loudly.
    std::fprintf(stderr, "spec %s: %s\n", spec_json.dump().c_str(), h.status().ToString().c_str());
    std::abort();
  }
  return std::move(h).value();
}

std::vector<int64_t> Flatten(const json& tokens, size_t* batch, size_t* seq) {
  std::vector<int64_t> ids;
  *batch = tokens.size();
  *seq = tokens[0].size();
  for (const auto& row : tokens) {
    for (const auto& t : row) ids.push_back(t.get<int64_t>());
  }
  return ids;
}

class ReferenceVectorsTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ReferenceVectorsTest, MultipliersPrimesAndRowIdsMatchTheReferenceExactly) {
  const json& c = testing::VectorCase(GetParam());
  const EngramHasher h = HasherFor(c["spec"]);
  size_t batch = 0, seq = 0;
  const std::vector<int64_t> ids = Flatten(c["tokens"], &batch, &seq);
  const size_t k = h.lookups_per_token();
  std::vector<uint64_t> out(batch * seq * k);
  for (const auto& [layer_key, want] : c["layers"].items()) {
    const int64_t layer = std::stoll(layer_key);
    const auto* lt = h.layer(layer);
    ASSERT_NE(lt, nullptr);
    EXPECT_EQ(lt->multipliers, want["multipliers"].get<std::vector<int64_t>>()) << "layer " << layer;
    std::vector<uint64_t> primes;
    for (const auto& order : want["head_sizes"]) {
      for (const auto& p : order) primes.push_back(p.get<uint64_t>());
    }
    EXPECT_EQ(lt->head_sizes, primes) << "layer " << layer;
    EXPECT_EQ(lt->table_rows, want["table_rows"].get<uint64_t>());
    ASSERT_TRUE(h.Hash(layer, ids, batch, seq, {}, out.data()).ok());
    for (size_t b = 0; b < batch; ++b) {
      for (size_t t = 0; t < seq; ++t) {
        for (size_t j = 0; j < k; ++j) {
          ASSERT_EQ(out[(b * seq + t) * k + j], want["row_ids"][b][t][j].get<uint64_t>())
              << "layer " << layer << " [" << b << "][" << t << "][" << j << "]";
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, ReferenceVectorsTest,
                         ::testing::Values("demo_defaults", "deepseek_v41_flash", "seed_12345_four_layers",
                                           "compressed_negative_ids", "vocab_above_2_31_uses_32bit_draw"));

// The check value published for DeepSeek-V4.1-Flash (../shared/engram.md).
TEST(EngramHashTest, DeepSeekV41FlashCheckValue) {
  const EngramHasher h = HasherFor(testing::VectorCase("deepseek_v41_flash")["spec"]);
  EXPECT_EQ(h.layer(1)->multipliers,
            (std::vector<int64_t>{76632096046245, 4839876093313, 35959672319349, 73987337458391}));
  EXPECT_EQ(h.layer(1)->table_rows, 384006168u);
  EXPECT_EQ(h.layer(14)->table_rows, 384016682u);
  std::vector<int64_t> ids = {1000, 2000, 3000};
  std::vector<uint64_t> out(3 * 24);
  ASSERT_TRUE(h.Hash(1, ids, 1, 3, {}, out.data()).ok());
  EXPECT_EQ((std::vector<uint64_t>{out[0], out[24], out[48]}), (std::vector<uint64_t>{3617660, 1677522, 4092044}));
  EXPECT_EQ((std::vector<uint64_t>{out[1], out[25], out[49]}),
            (std::vector<uint64_t>{30972310, 20893828, 20393289}));
}

TEST(EngramHashTest, ChunksWithLeftContextHashLikeTheFullSequence) {
  const json& c = testing::VectorCase("compressed_negative_ids");
  const EngramHasher h = HasherFor(c["spec"]);
  size_t batch = 0, seq = 0;
  const std::vector<int64_t> ids = Flatten(c["tokens"], &batch, &seq);
  const size_t k = h.lookups_per_token(), ctx = 2;
  std::vector<uint64_t> full(batch * seq * k);
  ASSERT_TRUE(h.Hash(3, ids, batch, seq, {}, full.data()).ok());
  for (size_t start : {size_t{1}, size_t{4}, seq - 1}) {  // Includes a one-token decode step.
    const size_t len = seq - start;
    std::vector<int64_t> chunk, left;
    for (size_t b = 0; b < batch; ++b) {
      for (size_t t = start; t < seq; ++t) chunk.push_back(ids[b * seq + t]);
      for (size_t i = 0; i < ctx; ++i) {
        const ptrdiff_t t = static_cast<ptrdiff_t>(start) - static_cast<ptrdiff_t>(ctx) + static_cast<ptrdiff_t>(i);
        left.push_back(t >= 0 ? ids[b * seq + t] : h.spec().pad_id);
      }
    }
    std::vector<uint64_t> part(batch * len * k);
    ASSERT_TRUE(h.Hash(3, chunk, batch, len, left, part.data()).ok());
    for (size_t b = 0; b < batch; ++b) {
      for (size_t t = 0; t < len; ++t) {
        for (size_t j = 0; j < k; ++j) {
          ASSERT_EQ(part[(b * len + t) * k + j], full[(b * seq + start + t) * k + j]) << start;
        }
      }
    }
  }
}

TEST(EngramHashTest, ExplicitMultipliersOverrideTheDraw) {
  json spec = testing::VectorCase("demo_defaults")["spec"];
  spec["multipliers"] = {{"1", {3, 5, 7}}};
  const EngramHasher h = HasherFor(spec);
  EXPECT_EQ(h.layer(1)->multipliers, (std::vector<int64_t>{3, 5, 7}));
  std::vector<int64_t> ids = {10, 20};
  std::vector<uint64_t> out(2 * 16);
  ASSERT_TRUE(h.Hash(1, ids, 1, 2, {}, out.data()).ok());
  // Position 1, order 2, head 0: (20*3 ^ 10*5) mod P0.
  EXPECT_EQ(out[16], uint64_t((20 * 3) ^ (10 * 5)) % h.layer(1)->head_sizes[0]);
  // Position 0 sees the pad (2) on its left; order 3, head 0 sits after the 8 order-2 heads.
  const uint64_t mix3 = uint64_t((10 * 3) ^ (2 * 5) ^ (2 * 7));
  EXPECT_EQ(out[8], mix3 % h.layer(1)->head_sizes[8] + h.layer(1)->offsets[8]);
}

TEST(EngramHashTest, BadInputsGetClearErrors) {
  const EngramHasher h = HasherFor(testing::VectorCase("compressed_negative_ids")["spec"]);
  std::vector<int64_t> ids = {1, 2, 3, 4};
  std::vector<uint64_t> out(4 * h.lookups_per_token());
  EXPECT_TRUE(h.Hash(99, ids, 2, 2, {}, out.data()).IsInvalidArgument());
  EXPECT_TRUE(h.Hash(3, ids, 3, 2, {}, out.data()).IsInvalidArgument());
  std::vector<int64_t> short_ctx = {1};
  EXPECT_TRUE(h.Hash(3, ids, 2, 2, short_ctx, out.data()).IsInvalidArgument());
  std::vector<int64_t> outside = {1, 2, 3, 40};  // The map covers ids 0..39.
  Status s = h.Hash(3, outside, 2, 2, {}, out.data());
  EXPECT_TRUE(s.IsInvalidArgument());
  EXPECT_NE(s.message().find("40"), std::string::npos);
}

TEST(EngramHashTest, ImpossibleSpecIsRefusedAtCreate) {
  EngramSpec spec;
  spec.engram_vocab_size = {100};
  spec.max_ngram_size = 3;
  spec.layer_ids = {0};
  spec.compressed_vocab_size = 10;
  EXPECT_TRUE(EngramHasher::Create(spec).status().IsInvalidArgument());
}

}  // namespace
}  // namespace engram::client
