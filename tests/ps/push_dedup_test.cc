// PushDedup: exactly-once bookkeeping of push parts, per client number and table shard.
#include "ps/push_dedup.h"

#include <algorithm>

#include <gtest/gtest.h>

namespace engram::ps {
namespace {

using V = PushDedup::Verdict;

TEST(PushDedupTest, ARetransmissionGetsTheFirstOutcomeAndIsNotApplied) {
  PushDedup d;
  Status prior;
  std::vector<uint32_t> to_apply;
  const std::vector<uint32_t> shards = {1, 4};
  ASSERT_EQ(d.Begin(7, 1, shards, &prior, &to_apply), V::kApply);
  EXPECT_EQ(to_apply, shards);
  std::vector<uint32_t> other;
  EXPECT_EQ(d.Begin(7, 1, shards, &prior, &other), V::kInProgress);  // A second request meanwhile.
  d.Finish(7, 1, Status::OK(), to_apply);
  EXPECT_EQ(d.Begin(7, 1, shards, &prior, &to_apply), V::kDuplicate);
  EXPECT_TRUE(prior.ok());
  EXPECT_EQ(d.Begin(7, 1, std::vector<uint32_t>{4}, &prior, &to_apply), V::kDuplicate);  // A part of it.
  // Another client's number 1 is another push.
  EXPECT_EQ(d.Begin(8, 1, shards, &prior, &to_apply), V::kApply);
}

TEST(PushDedupTest, RowsOfShardsNotAppliedUnderTheNumberAreApplied) {
  PushDedup d;
  Status prior;
  std::vector<uint32_t> to_apply;
  ASSERT_EQ(d.Begin(7, 1, std::vector<uint32_t>{2}, &prior, &to_apply), V::kApply);
  d.Finish(7, 1, Status::OK(), to_apply);
  ASSERT_EQ(d.Begin(7, 1, std::vector<uint32_t>{0, 2}, &prior, &to_apply), V::kApply);
  EXPECT_EQ(to_apply, std::vector<uint32_t>{0});
  d.Finish(7, 1, Status::OK(), to_apply);
  EXPECT_EQ(d.Begin(7, 1, std::vector<uint32_t>{0, 2}, &prior, &to_apply), V::kDuplicate);
}

TEST(PushDedupTest, ARefusedReopeningKeepsWhatWasAppliedBefore) {
  PushDedup d;
  Status prior;
  std::vector<uint32_t> to_apply;
  ASSERT_EQ(d.Begin(7, 1, std::vector<uint32_t>{2}, &prior, &to_apply), V::kApply);
  d.Finish(7, 1, Status::OK(), to_apply);
  ASSERT_EQ(d.Begin(7, 1, std::vector<uint32_t>{0}, &prior, &to_apply), V::kApply);
  d.Forget(7, 1);  // Shard 0 was frozen here: nothing applied.
  EXPECT_EQ(d.Begin(7, 1, std::vector<uint32_t>{2}, &prior, &to_apply), V::kDuplicate);
  EXPECT_EQ(d.Begin(7, 1, std::vector<uint32_t>{0}, &prior, &to_apply), V::kApply);
  d.Finish(7, 1, Status::InvalidArgument("x"), to_apply);  // A failed reopening keeps the first OK.
  EXPECT_EQ(d.Begin(7, 1, std::vector<uint32_t>{2}, &prior, &to_apply), V::kDuplicate);
  EXPECT_TRUE(prior.ok());
  // A first attempt refused is forgotten entirely.
  ASSERT_EQ(d.Begin(7, 2, std::vector<uint32_t>{2}, &prior, &to_apply), V::kApply);
  d.Forget(7, 2);
  EXPECT_EQ(d.Begin(7, 2, std::vector<uint32_t>{2}, &prior, &to_apply), V::kApply);
}

TEST(PushDedupTest, ReplicasAndRecoveryRecordTheirShardsAndCheckpointsAllShards) {
  PushDedup d;
  Status prior;
  std::vector<uint32_t> to_apply;
  d.RecordApplied(7, 1, std::vector<uint32_t>{3}, /*all_shards=*/false);  // A backup's replica.
  EXPECT_EQ(d.Begin(7, 1, std::vector<uint32_t>{3}, &prior, &to_apply), V::kDuplicate);
  EXPECT_EQ(d.Begin(7, 1, std::vector<uint32_t>{3, 5}, &prior, &to_apply), V::kApply);
  EXPECT_EQ(to_apply, std::vector<uint32_t>{5});
  d.RecordApplied(7, 2);  // From a checkpoint's list: its shards are not known.
  EXPECT_EQ(d.Begin(7, 2, std::vector<uint32_t>{0, 9}, &prior, &to_apply), V::kDuplicate);
}

TEST(PushDedupTest, AppliedToListsThePartsOfAShardThatSucceeded) {
  PushDedup d;
  Status prior;
  std::vector<uint32_t> to_apply;
  ASSERT_EQ(d.Begin(7, 1, std::vector<uint32_t>{1, 3}, &prior, &to_apply), V::kApply);
  d.Finish(7, 1, Status::OK(), to_apply);
  ASSERT_EQ(d.Begin(7, 2, std::vector<uint32_t>{3}, &prior, &to_apply), V::kApply);
  d.Finish(7, 2, Status::InvalidArgument("x"), to_apply);  // Failed: nothing applied.
  ASSERT_EQ(d.Begin(8, 5, std::vector<uint32_t>{2}, &prior, &to_apply), V::kApply);
  d.Finish(8, 5, Status::OK(), to_apply);
  d.RecordApplied(9, 4);  // From a checkpoint: every shard.
  ASSERT_EQ(d.Begin(10, 1, std::vector<uint32_t>{3}, &prior, &to_apply), V::kApply);  // Being applied.
  auto got = d.AppliedTo(3);
  std::sort(got.begin(), got.end());
  EXPECT_EQ(got, (std::vector<std::pair<uint64_t, uint64_t>>{{7, 1}, {9, 4}, {10, 1}}));
  d.Forget(10, 1);  // Refused after all: not applied.
  EXPECT_EQ(d.AppliedTo(3).size(), 2u);
}

}  // namespace
}  // namespace engram::ps
