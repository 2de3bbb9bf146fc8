// The placement leader's repair plans: failover and re-replication choices.
#include "cluster/repair.h"
#include "cluster/rejoin.h"

#include <gtest/gtest.h>

namespace engram::cluster {
namespace {

constexpr uint32_t kNo = kNoNode;

TableRecord Record(const std::string& name, std::vector<uint32_t> owners, std::vector<uint32_t> backups) {
  TableRecord rec;
  rec.info.schema.name = name;
  rec.info.owners = std::move(owners);
  rec.info.backups = std::move(backups);
  return rec;
}

TEST(PlanFailoverTest, ADeadPrimarysLiveBackupTakesItsShardsAndADeadBackupIsDropped) {
  const TableRecord rec = Record("t", {0, 1, 2, 0, 1, 2}, {1, 2, 0, 1, 2, 0});
  const auto plan = PlanFailover(rec.info, {0, 2});
  ASSERT_TRUE(plan.has_value());
  EXPECT_EQ(plan->owners, (std::vector<uint32_t>{0, 2, 2, 0, 2, 2}));
  EXPECT_EQ(plan->backups, (std::vector<uint32_t>{kNo, kNo, 0, kNo, kNo, 0}));
  EXPECT_EQ(plan->dead, (std::vector<uint32_t>{1}));
}

TEST(PlanFailoverTest, NothingChangesWhileEveryNodeHoldsALease) {
  const TableRecord rec = Record("t", {0, 1, 2}, {1, 2, 0});
  EXPECT_FALSE(PlanFailover(rec.info, {0, 1, 2}).has_value());
}

TEST(PlanFailoverTest, AShardWhosePrimaryAndBackupAreBothDeadKeepsItsPrimary) {
  const TableRecord rec = Record("t", {0, 1, 2}, {1, 0, 0});
  const auto plan = PlanFailover(rec.info, {2});
  ASSERT_TRUE(plan.has_value());
  EXPECT_EQ(plan->owners, (std::vector<uint32_t>{0, 1, 2})) << "no live copy to promote: the shard waits for its node";
  EXPECT_EQ(plan->backups, (std::vector<uint32_t>{kNo, kNo, kNo}));
  EXPECT_EQ(plan->dead, (std::vector<uint32_t>{0, 1}));
  const TableRecord unreplicated = Record("u", {0, 1}, {});
  EXPECT_FALSE(PlanFailover(unreplicated.info, {0}).has_value());
}

TEST(NextBackupTest, TheFirstUnbackedShardGoesToTheLiveNodeBackingTheFewest) {
  // Shard 1 has no backup; node 2 backs two shards, node 0 none.
  const std::vector<TableRecord> tables = {Record("t", {0, 1, 1, 1}, {1, kNo, 2, 2})};
  const auto plan = NextBackup(tables, {0, 1, 2});
  ASSERT_TRUE(plan.has_value());
  EXPECT_EQ(plan->table, "t");
  EXPECT_EQ(plan->shard, 1u);
  EXPECT_EQ(plan->to, 0u);
}

TEST(NextBackupTest, NeverItsOwnPrimaryNorADeadNode) {
  const std::vector<TableRecord> tables = {Record("t", {0, 0}, {kNo, 1})};
  EXPECT_FALSE(NextBackup(tables, {0}).has_value()) << "only the primary is live";
  const auto plan = NextBackup(tables, {0, 1, 2});
  ASSERT_TRUE(plan.has_value());
  EXPECT_EQ(plan->to, 2u) << "node 1 backs a shard already";
}

TEST(NextBackupTest, SkipsUnreplicatedTablesAndShardsWhosePrimaryIsDead) {
  const std::vector<TableRecord> tables = {Record("plain", {0, 1}, {}), Record("t", {1, 0}, {kNo, kNo})};
  const auto plan = NextBackup(tables, {0, 2});
  ASSERT_TRUE(plan.has_value());
  EXPECT_EQ(plan->table, "t");
  EXPECT_EQ(plan->shard, 1u) << "shard 0's primary (node 1) holds no lease";
  EXPECT_EQ(plan->to, 2u);
}


// A restarted node 1 (its old key may still be registered: it is in `up`) gives the shards it
// owned to their live backups and stops backing up anything.
TEST(PlanRejoinTest, ARestartedNodeHandsItsShardsToTheirLiveBackupsAndBacksUpNothing) {
  const TableRecord rec = Record("t", {0, 1, 2, 0, 1, 2}, {1, 2, 0, 1, 2, 0});
  auto plan = PlanRejoin(rec.info, 1, {0, 1, 2});
  ASSERT_TRUE(plan.changes());
  EXPECT_EQ(plan.owners, (std::vector<uint32_t>{0, 2, 2, 0, 2, 2}));
  EXPECT_EQ(plan.backups, (std::vector<uint32_t>{kNo, kNo, 0, kNo, kNo, 0}));
  EXPECT_EQ(plan.handed_off, (std::vector<uint32_t>{1, 4}));
  EXPECT_EQ(plan.dropped, (std::vector<uint32_t>{0, 3}));
  EXPECT_TRUE(plan.kept.empty());
}

TEST(PlanRejoinTest, AShardWithoutALiveBackupIsKept) {
  const TableRecord rec = Record("t", {1, 1, 0}, {2, kNo, 1});
  auto plan = PlanRejoin(rec.info, 1, {0, 1});  // Node 2 holds no lease.
  ASSERT_TRUE(plan.changes());
  EXPECT_EQ(plan.owners, (std::vector<uint32_t>{1, 1, 0}));
  EXPECT_EQ(plan.backups, (std::vector<uint32_t>{2, kNo, kNo}));
  EXPECT_EQ(plan.kept, (std::vector<uint32_t>{0, 1}));
  EXPECT_EQ(plan.dropped, (std::vector<uint32_t>{2}));
}

TEST(PlanRejoinTest, NothingChangesForANodeTheRecordNoLongerNamesOrThatOnlyKeeps) {
  EXPECT_FALSE(PlanRejoin(Record("t", {0, 2}, {2, 0}).info, 1, {0, 1, 2}).changes());
  EXPECT_FALSE(PlanRejoin(Record("t", {1, 1}, {}).info, 1, {0, 1, 2}).changes());  // Unreplicated.
}


}  // namespace
}  // namespace engram::cluster
