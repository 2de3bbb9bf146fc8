#include "ps/table_registry.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "engram/init.h"

namespace engram::ps {
namespace {

TableSchema Schema(const std::string& name, uint64_t rows = 10000, uint32_t dim = 4) {
  TableSchema s;
  s.name = name;
  s.num_rows = rows;
  s.dim = dim;
  s.optimizer.kind = OptimizerKind::kSgd;
  s.optimizer.lr = 1.0f;
  s.init = {InitKind::kZeros, 0.0f, 0};
  return s;
}

TEST(TableRegistryTest, CreateGetListDrop) {
  TableRegistry reg;
  ASSERT_TRUE(reg.CreateTable(Schema("a"), 8).ok());
  ASSERT_TRUE(reg.CreateTable(Schema("b"), 1).ok());
  EXPECT_EQ(reg.CreateTable(Schema("a"), 8).status().code(), Code::kAlreadyExists);
  EXPECT_EQ(reg.List(), (std::vector<std::string>{"a", "b"}));
  EXPECT_TRUE(reg.Get("a").ok());
  EXPECT_TRUE(reg.DropTable("a").ok());
  EXPECT_TRUE(reg.Get("a").status().IsNotFound());
  EXPECT_TRUE(reg.DropTable("a").IsNotFound());
}

TEST(TableRegistryTest, InvalidSchemaIsRefused) {
  TableRegistry reg;
  TableSchema s = Schema("bad name!");
  EXPECT_TRUE(reg.CreateTable(s, 4).status().IsInvalidArgument());
  s = Schema("ok");
  s.dim = 0;
  EXPECT_TRUE(reg.CreateTable(s, 4).status().IsInvalidArgument());
  EXPECT_TRUE(reg.CreateTable(Schema("tiny", 3), 8).status().IsInvalidArgument());  // More shards than rows.
}

TEST(TableRegistryTest, PushAndPullAcrossShardsKeepRequestOrder) {
  TableRegistry reg;
  auto t = reg.CreateTable(Schema("t"), 16);
  ASSERT_TRUE(t.ok());
  const std::vector<uint64_t> rows = {9999, 0, 5000, 0, 626};
  std::vector<float> g(rows.size() * 4);
  for (size_t i = 0; i < rows.size(); ++i) {
    for (int c = 0; c < 4; ++c) g[i * 4 + c] = float(i + 1);
  }
  ASSERT_TRUE((*t)->Push(rows, g.data()).ok());
  std::vector<float> out(rows.size() * 4);
  ASSERT_TRUE((*t)->Pull(rows, reinterpret_cast<uint8_t*>(out.data())).ok());
  const float want[] = {-1, -6, -3, -6, -5};  // Row 0 got 2 + 4.
  for (size_t i = 0; i < rows.size(); ++i) EXPECT_EQ(out[i * 4], want[i]) << i;
}

TEST(TableRegistryTest, ABadRowAnywhereInTheBatchChangesNothing) {
  TableRegistry reg;
  auto t = reg.CreateTable(Schema("t"), 4);
  ASSERT_TRUE(t.ok());
  std::vector<float> g(3 * 4, 1.0f);
  EXPECT_TRUE((*t)->Push(std::vector<uint64_t>{1, 9000, 10000}, g.data()).IsOutOfRange());
  g[9] = NAN;  // Row index 2, in a different shard from row index 0.
  EXPECT_TRUE((*t)->Push(std::vector<uint64_t>{1, 9000, 5}, g.data()).IsInvalidArgument());
  std::vector<float> out(2 * 4);
  ASSERT_TRUE((*t)->Pull(std::vector<uint64_t>{1, 9000}, reinterpret_cast<uint8_t*>(out.data())).ok());
  EXPECT_EQ(out, std::vector<float>(8, 0.0f));
  EXPECT_TRUE((*t)->Pull(std::vector<uint64_t>{10000}, reinterpret_cast<uint8_t*>(out.data())).IsOutOfRange());
}

TEST(TableRegistryTest, RowsOfShardsOwnedElsewhereAreRefused) {
  auto map = cluster::ShardMap::Create(100, {0, 1}, 1);
  ASSERT_TRUE(map.ok());
  auto t = Table::Create(Schema("t", 100), *map, /*node_id=*/0, {});
  ASSERT_TRUE(t.ok());
  std::vector<float> out(4);
  EXPECT_TRUE((*t)->Pull(std::vector<uint64_t>{10}, reinterpret_cast<uint8_t*>(out.data())).ok());
  EXPECT_EQ((*t)->Pull(std::vector<uint64_t>{60}, reinterpret_cast<uint8_t*>(out.data())).code(),
            Code::kFailedPrecondition);
  EXPECT_EQ((*t)->stats().local_shards, 1u);
}

TEST(TableRegistryTest, ADroppedTableStaysValidForHoldersOfIt) {
  TableRegistry reg;
  auto t = reg.CreateTable(Schema("t"), 2);
  ASSERT_TRUE(t.ok());
  std::shared_ptr<Table> held = *t;
  ASSERT_TRUE(reg.DropTable("t").ok());
  std::vector<float> out(4);
  EXPECT_TRUE(held->Pull(std::vector<uint64_t>{3}, reinterpret_cast<uint8_t*>(out.data())).ok());
}

}  // namespace
}  // namespace engram::ps
