#include "client/dedup.h"

#include <gtest/gtest.h>

#include <random>

namespace engram::client {
namespace {

TEST(DedupTest, UniqueIsSortedAndInverseReconstructsTheInput) {
  std::mt19937_64 gen(1);
  std::vector<uint64_t> ids(5000);
  for (auto& x : ids) x = gen() % 700;  // Many duplicates.
  std::vector<uint64_t> unique;
  std::vector<uint32_t> inverse;
  DedupScratch scratch;
  Deduplicate(ids, &unique, &inverse, &scratch);
  EXPECT_TRUE(std::is_sorted(unique.begin(), unique.end()));
  EXPECT_EQ(std::adjacent_find(unique.begin(), unique.end()), unique.end());
  ASSERT_EQ(inverse.size(), ids.size());
  for (size_t i = 0; i < ids.size(); ++i) ASSERT_EQ(unique[inverse[i]], ids[i]);
}

TEST(DedupTest, EmptyInputGivesEmptyOutput) {
  std::vector<uint64_t> unique = {1};
  std::vector<uint32_t> inverse = {1};
  Deduplicate({}, &unique, &inverse);
  EXPECT_TRUE(unique.empty());
  EXPECT_TRUE(inverse.empty());
}

TEST(DedupTest, SumByInverseAddsGradientsOfDuplicateRows) {
  const std::vector<uint64_t> ids = {7, 3, 7, 7};
  std::vector<uint64_t> unique;
  std::vector<uint32_t> inverse;
  Deduplicate(ids, &unique, &inverse);
  ASSERT_EQ(unique, (std::vector<uint64_t>{3, 7}));
  const std::vector<float> g = {1, 10, 2, 20, 3, 30, 4, 40};  // dim 2
  std::vector<float> out(4, -1.0f);
  SumByInverse(inverse, unique.size(), 2, g.data(), out.data());
  EXPECT_EQ(out, (std::vector<float>{2, 20, 8, 80}));
}

}  // namespace
}  // namespace engram::client

namespace engram::client {
namespace {

TEST(DedupTest, SortedDistinctInputIsReturnedAsIsWithIdentityInverse) {
  const std::vector<uint64_t> ids = {2, 5, 9, 1000};
  std::vector<uint64_t> unique;
  std::vector<uint32_t> inverse;
  Deduplicate(ids, &unique, &inverse);
  EXPECT_EQ(unique, ids);
  EXPECT_EQ(inverse, (std::vector<uint32_t>{0, 1, 2, 3}));
  Deduplicate(std::vector<uint64_t>{2, 5, 5}, &unique, &inverse);  // Sorted but not distinct.
  EXPECT_EQ(unique, (std::vector<uint64_t>{2, 5}));
  EXPECT_EQ(inverse, (std::vector<uint32_t>{0, 1, 1}));
}

}  // namespace
}  // namespace engram::client
