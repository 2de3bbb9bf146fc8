#include "ps/table_registry.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
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

// Move state belongs to one operation at a time per shard: a second operation (the leader's
// re-replication racing an engramctl move) is told "busy" and cannot unfreeze, untrack or drop
// what the first one holds.
TEST(TableMoveTest, ASecondOperationIsBusyAndItsAbortLeavesTheFirstOnesState) {
  auto map = cluster::ShardMap::Create(100, {0, 1}, 1);
  ASSERT_TRUE(map.ok());
  auto t = Table::Create(Schema("t", 100), *map, /*node_id=*/0, {});
  ASSERT_TRUE(t.ok());
  Table& table = **t;
  ASSERT_TRUE(table.TrackOutgoing(0, /*op=*/7).ok());
  EXPECT_TRUE(table.TrackOutgoing(0, 7).ok());  // A retry of the same step.
  const Status busy = table.TrackOutgoing(0, 8);
  EXPECT_TRUE(busy.IsUnavailable()) << busy.ToString();
  EXPECT_NE(busy.message().find("busy:"), std::string::npos);
  EXPECT_FALSE(table.FreezeOutgoing(0, 8).ok());
  ASSERT_TRUE(table.FreezeOutgoing(0, 7).ok());
  table.AbortMove(0, 8);  // Not its operation: the shard stays frozen.
  const std::vector<float> g(4, 1.0f);
  EXPECT_TRUE(table.Push(std::vector<uint64_t>{1}, g.data()).IsUnavailable());
  table.AbortMove(0, 7);
  EXPECT_TRUE(table.Push(std::vector<uint64_t>{1}, g.data()).ok());
  EXPECT_TRUE(table.TrackOutgoing(0, 8).ok());  // Free again.

  // The same on the receiving side: an incoming copy is its operation's.
  ASSERT_TRUE(table.PrepareIncoming(1, 7).ok());
  EXPECT_TRUE(table.PrepareIncoming(1, 9).IsUnavailable());
  table.AbortMove(1, 9);
  RowImage im;
  im.row = 60;
  im.version = 4;
  im.value.assign(16, 0);
  const Status w = table.WriteIncoming(1, {im}, nullptr);
  EXPECT_TRUE(w.ok()) << "operation 9's abort dropped operation 7's copy: " << w.ToString();
}

// A map change that does not install an incoming copy (another shard's flip) leaves it, and a
// backup dropped from the map (its node died) does not end a move of that shard.
TEST(TableMoveTest, OtherFlipsAndDroppedBackupsLeaveAMoveInProgress) {
  auto map = cluster::ShardMap::Create(100, {1, 0}, 1, {0, 2});
  ASSERT_TRUE(map.ok());
  auto t = Table::Create(Schema("t", 100), *map, /*node_id=*/0, {});
  ASSERT_TRUE(t.ok());
  Table& table = **t;
  ASSERT_TRUE(table.TrackOutgoing(1, 5).ok());   // Shard 1 moves away from this node...
  ASSERT_TRUE(table.FreezeOutgoing(1, 5).ok());
  auto next = cluster::ShardMap::Create(100, {1, 0}, 2, {0, cluster::kNoNode});  // ...when its backup dies.
  ASSERT_TRUE(next.ok());
  ASSERT_TRUE(table.AdoptMap(*next).ok());
  const std::vector<float> g(4, 1.0f);
  EXPECT_TRUE(table.Push(std::vector<uint64_t>{70}, g.data()).IsUnavailable()) << "the freeze was lifted mid-move";
  EXPECT_TRUE(table.FreezeOutgoing(1, 5).ok()) << "the move's tracking ended";
  // Shard 0 (this node backs it up) is promoted here: the replica is installed, and the
  // move of shard 1 still holds.
  auto promoted = cluster::ShardMap::Create(100, {0, 0}, 3, {cluster::kNoNode, cluster::kNoNode});
  ASSERT_TRUE(promoted.ok());
  ASSERT_TRUE(table.AdoptMap(*promoted).ok());
  std::vector<float> out(4);
  EXPECT_TRUE(table.Pull(std::vector<uint64_t>{10}, reinterpret_cast<uint8_t*>(out.data())).ok());
  EXPECT_TRUE(table.Push(std::vector<uint64_t>{70}, g.data()).IsUnavailable());
}


RowImage Image(uint64_t row, uint64_t version, float value) {
  RowImage im;
  im.row = row;
  im.version = version;
  im.value.resize(16);
  const float v[4] = {value, value, value, value};
  std::memcpy(im.value.data(), v, 16);
  return im;
}

float First(const Table& t, uint64_t row) {
  std::vector<float> out(4);
  const Status s = t.Pull(std::vector<uint64_t>{row}, reinterpret_cast<uint8_t*>(out.data()));
  EXPECT_TRUE(s.ok()) << s.ToString();
  return out[0];
}

// A map of the 100-row, 2-shard test table (kN: no backup).
constexpr uint32_t kN = cluster::kNoNode;
cluster::ShardMap Map(std::vector<uint32_t> owners, uint64_t epoch, std::vector<uint32_t> backups = {}) {
  auto m = cluster::ShardMap::Create(100, std::move(owners), epoch, std::move(backups));
  EXPECT_TRUE(m.ok()) << m.status().ToString();
  return *m;
}

// The test table on node 1 placed by `map`.
std::shared_ptr<Table> OnNode1(const cluster::ShardMap& map) {
  auto t = Table::Create(Schema("t", 100), map, /*node_id=*/1, {});
  EXPECT_TRUE(t.ok()) << t.status().ToString();
  return t.ok() ? *t : nullptr;
}

// A move of shard 0 onto its backup's node (node 1) is under way, its copy unfinished, when the
// source hangs and the leader promotes the backup: the replica (every acknowledged write) is
// served, not the half-made copy.
TEST(TableMoveTest, AFailoverMidMoveOntoTheBackupInstallsTheReplicaNotTheUnfinishedCopy) {
  auto t = OnNode1(Map({0, 0}, 1, {1, kN}));
  ASSERT_NE(t, nullptr);
  Table& table = *t;
  const RowImage acked = Image(5, 2, 1.0f);
  ASSERT_TRUE(table.Restore(acked.row, acked.version, acked.value.data(), nullptr).ok());  // Replicated.
  ASSERT_TRUE(table.PrepareIncoming(0, /*op=*/7).ok());
  ASSERT_TRUE(table.WriteIncoming(0, {Image(40, 2, 2.0f)}, nullptr).ok());  // Row 5 not copied yet.
  ASSERT_TRUE(table.AdoptMap(Map({1, 0}, 2, {kN, kN})).ok());
  EXPECT_EQ(First(table, 5), 1.0f) << "the unfinished copy was installed over the replica";
  EXPECT_TRUE(table.WriteIncoming(0, {Image(40, 2, 2.0f)}, nullptr).code() == Code::kFailedPrecondition) << "the copy outlived its move";
}

// Without a replica, only a sealed copy (source frozen, every row copied) is installed.
TEST(TableMoveTest, OnlyASealedCopyIsInstalledWhereThereIsNoReplica) {
  auto t = OnNode1(Map({0, 0}, 1));
  ASSERT_NE(t, nullptr);
  Table& table = *t;
  ASSERT_TRUE(table.PrepareIncoming(0, /*op=*/7).ok());
  ASSERT_TRUE(table.WriteIncoming(0, {Image(5, 4, 2.0f)}, nullptr).ok());
  auto moved = cluster::ShardMap::Create(100, {1, 0}, 2);
  ASSERT_TRUE(moved.ok());
  const Status unsealed = table.AdoptMap(*moved);
  EXPECT_TRUE(unsealed.code() == Code::kFailedPrecondition) << unsealed.ToString();
  EXPECT_NE(unsealed.message().find("no complete copy"), std::string::npos) << unsealed.ToString();
  EXPECT_TRUE(table.SealIncoming(0, /*op=*/8).code() == Code::kFailedPrecondition) << "another operation's copy was sealed";
  ASSERT_TRUE(table.SealIncoming(0, 7).ok());
  ASSERT_TRUE(table.AdoptMap(*moved).ok());
  EXPECT_EQ(First(table, 5), 2.0f);
  EXPECT_TRUE(table.SealIncoming(1, 7).code() == Code::kFailedPrecondition);
}

// A node that missed the record dropping it as shard 0's backup keeps a replica its primary
// stopped forwarding to; a move's driver sends it the current record before copying, which ends
// that replica, so when it is chosen as the backup again it serves the fresh copy, also once
// promoted.
TEST(TableMoveTest, ABackupChosenAgainServesTheFreshCopyNotTheReplicaItKeptFromBefore) {
  auto t = OnNode1(Map({0, 0}, 1, {1, kN}));
  ASSERT_NE(t, nullptr);
  Table& table = *t;
  const RowImage stale = Image(5, 2, 1.0f);
  ASSERT_TRUE(table.Restore(stale.row, stale.version, stale.value.data(), nullptr).ok());
  ASSERT_TRUE(table.AdoptMap(Map({0, 0}, 2, {kN, kN})).ok());  // The record the driver sends first.
  ASSERT_TRUE(table.PrepareIncoming(0, /*op=*/9).ok());
  ASSERT_TRUE(table.WriteIncoming(0, {Image(5, 6, 3.0f)}, nullptr).ok());
  ASSERT_TRUE(table.SealIncoming(0, 9).ok());
  ASSERT_TRUE(table.AdoptMap(Map({0, 0}, 3, {1, kN})).ok());
  ASSERT_TRUE(table.AdoptMap(Map({1, 0}, 4, {kN, kN})).ok());
  EXPECT_EQ(First(table, 5), 3.0f) << "the stale replica was kept";
}

// A sealed copy left by a move whose driver died never replaces a replica that its primary
// still feeds: a later map that keeps this node the backup keeps the replica.
TEST(TableMoveTest, ASealedCopyLeftBehindNeverReplacesALiveReplica) {
  auto t = OnNode1(Map({0, 0}, 1, {1, kN}));
  ASSERT_NE(t, nullptr);
  Table& table = *t;
  ASSERT_TRUE(table.PrepareIncoming(0, /*op=*/9).ok());
  ASSERT_TRUE(table.WriteIncoming(0, {Image(5, 2, 1.0f)}, nullptr).ok());
  ASSERT_TRUE(table.SealIncoming(0, 9).ok());  // Its driver dies here; the source is unfrozen later.
  const RowImage fresh = Image(5, 4, 2.0f);   // A write forwarded to the replica since.
  ASSERT_TRUE(table.Restore(fresh.row, fresh.version, fresh.value.data(), nullptr).ok());
  auto other = cluster::ShardMap::Create(100, {0, 2}, 2, {1, kN});  // Another shard moved.
  ASSERT_TRUE(other.ok());
  ASSERT_TRUE(table.AdoptMap(*other).ok());
  ASSERT_TRUE(table.AdoptMap(Map({1, 2}, 3, {kN, kN})).ok());
  EXPECT_EQ(First(table, 5), 2.0f) << "the sealed copy replaced the live replica";
}

}  // namespace
}  // namespace engram::ps
