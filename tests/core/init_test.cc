#include "engram/init.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

namespace engram {
namespace {

// Known-answer vectors of Random123 (kat_vectors) for philox4x32-10.
TEST(PhiloxTest, MatchesRandom123KnownAnswers) {
  EXPECT_EQ(Philox4x32({0, 0, 0, 0}, {0, 0}),
            (std::array<uint32_t, 4>{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}));
  EXPECT_EQ(Philox4x32({~0u, ~0u, ~0u, ~0u}, {~0u, ~0u}),
            (std::array<uint32_t, 4>{0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}));
  EXPECT_EQ(Philox4x32({0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}, {0xa4093822u, 0x299f31d0u}),
            (std::array<uint32_t, 4>{0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}));
}

TEST(InitTest, RowValueIsAPureFunctionOfSeedRowAndColumn) {
  InitConfig cfg{InitKind::kNormal, 0.02f, 1234};
  std::vector<float> a(67), b(67), c(67);
  InitialRow(cfg, 987654321012ull, 67, a.data());
  InitialRow(cfg, 987654321012ull, 67, b.data());
  EXPECT_EQ(a, b);
  InitialRow(cfg, 987654321013ull, 67, c.data());
  EXPECT_NE(a, c);
  cfg.seed = 1235;
  InitialRow(cfg, 987654321012ull, 67, c.data());
  EXPECT_NE(a, c);
  // A prefix of a wider row is the narrower row: columns do not depend on dim.
  std::vector<float> narrow(5);
  cfg.seed = 1234;
  InitialRow(cfg, 987654321012ull, 5, narrow.data());
  EXPECT_TRUE(std::equal(narrow.begin(), narrow.end(), a.begin()));
}

TEST(InitTest, NormalHasTheRequestedMomentsOverManyRows) {
  InitConfig cfg{InitKind::kNormal, 0.5f, 7};
  double sum = 0, sq = 0;
  const int rows = 20000, dim = 16;
  std::vector<float> v(dim);
  for (int r = 0; r < rows; ++r) {
    InitialRow(cfg, r, dim, v.data());
    for (float x : v) {
      sum += x;
      sq += double{x} * x;
    }
  }
  const double n = double{rows} * dim;
  const double mean = sum / n, sd = std::sqrt(sq / n - mean * mean);
  EXPECT_NEAR(mean, 0.0, 0.01);
  EXPECT_NEAR(sd, 0.5, 0.01);
}

TEST(InitTest, UniformStaysInRangeWithTheRightMean) {
  InitConfig cfg{InitKind::kUniform, 0.1f, 9};
  std::vector<float> v(32);
  double sum = 0;
  for (int r = 0; r < 5000; ++r) {
    InitialRow(cfg, r, 32, v.data());
    for (float x : v) {
      ASSERT_GE(x, -0.1f);
      ASSERT_LT(x, 0.1f);
      sum += x;
    }
  }
  EXPECT_NEAR(sum / (5000.0 * 32), 0.0, 0.002);
}

TEST(InitTest, ZerosAreZeros) {
  InitConfig cfg{InitKind::kZeros, 0.02f, 1};
  std::vector<float> v(8, 1.0f);
  InitialRow(cfg, 3, 8, v.data());
  for (float x : v) EXPECT_EQ(x, 0.0f);
}

}  // namespace
}  // namespace engram
