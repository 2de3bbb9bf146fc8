#include "cluster/shard_map.h"

#include <gtest/gtest.h>

namespace engram::cluster {
namespace {

TEST(ShardMapTest, ShardsAreContiguousRangesCoveringEveryRowOnce) {
  auto m = ShardMap::Create(1003, std::vector<uint32_t>(10, 0), 1);
  ASSERT_TRUE(m.ok());
  uint64_t next = 0;
  for (uint32_t s = 0; s < m->num_shards(); ++s) {
    const RowRange r = m->Range(s);
    EXPECT_EQ(r.first, next);
    EXPECT_GT(r.count, 0u);
    for (uint64_t row = r.first; row < r.first + r.count; ++row) ASSERT_EQ(m->ShardOf(row), s) << row;
    next = r.first + r.count;
  }
  EXPECT_EQ(next, 1003u);
}

TEST(ShardMapTest, ShardOfIsRightForHugeTables) {
  const uint64_t rows = 100'000'000'000ull;  // 10^11 rows.
  auto m = ShardMap::Create(rows, std::vector<uint32_t>(64, 0), 1);
  ASSERT_TRUE(m.ok());
  for (uint64_t row : std::vector<uint64_t>{0, rows - 1, rows / 2, 1562500000, 1562499999}) {
    const uint32_t s = m->ShardOf(row);
    const RowRange r = m->Range(s);
    EXPECT_GE(row, r.first);
    EXPECT_LT(row, r.first + r.count);
  }
}

TEST(ShardMapTest, BalancedDealsShardsEvenlyOverNodes) {
  const uint32_t nodes[] = {7, 8, 9};
  auto m = ShardMap::Balanced(6400, 64, nodes, 5);
  ASSERT_TRUE(m.ok());
  int count[10] = {};
  for (uint32_t s = 0; s < 64; ++s) count[m->Owner(s)]++;
  EXPECT_EQ(count[7], 22);
  EXPECT_EQ(count[8], 21);
  EXPECT_EQ(count[9], 21);
  EXPECT_EQ(m->epoch(), 5u);
}

TEST(ShardMapTest, ImpossibleMapsAreRefused) {
  EXPECT_TRUE(ShardMap::Create(10, {}, 1).status().IsInvalidArgument());
  EXPECT_TRUE(ShardMap::Create(3, std::vector<uint32_t>(4, 0), 1).status().IsInvalidArgument());
  EXPECT_TRUE(ShardMap::Create(9, std::vector<uint32_t>(4, 0), 1).status().IsInvalidArgument());  // Last empty.
  EXPECT_TRUE(ShardMap::Create(10, std::vector<uint32_t>(4, 0), 1).ok());  // 3+3+3+1.
  EXPECT_TRUE(ShardMap::Balanced(10, 2, {}, 1).status().IsInvalidArgument());
}

}  // namespace
}  // namespace engram::cluster
