// PushDedup: exactly-once bookkeeping of push parts, per client number and table shard.
#include "ps/push_dedup.h"

#include <algorithm>

#include <gtest/gtest.h>

namespace engram::ps {
namespace {

using V = PushDedup::Verdict;
using Shards = std::vector<uint32_t>;

class PushDedupTest : public ::testing::Test {
 protected:
  V Begin(uint64_t client, uint64_t seq, Shards shards) { return d_.Begin(client, seq, shards, &prior_, &to_apply_); }
  // A part begun and finished with OK on the shards Begin handed out.
  void Apply(uint64_t client, uint64_t seq, Shards shards) {
    ASSERT_EQ(Begin(client, seq, std::move(shards)), V::kApply);
    d_.Finish(client, seq, Status::OK(), to_apply_);
  }
  PushDedup d_;
  Status prior_;
  Shards to_apply_;
};

TEST_F(PushDedupTest, ARetransmissionGetsTheFirstOutcomeAndIsNotApplied) {
  ASSERT_EQ(Begin(7, 1, {1, 4}), V::kApply);
  EXPECT_EQ(to_apply_, (Shards{1, 4}));
  Shards other;  // A second request meanwhile.
  EXPECT_EQ(d_.Begin(7, 1, Shards{1, 4}, &prior_, &other), V::kInProgress);
  d_.Finish(7, 1, Status::OK(), to_apply_);
  EXPECT_EQ(Begin(7, 1, {1, 4}), V::kDuplicate);
  EXPECT_TRUE(prior_.ok());
  EXPECT_EQ(Begin(7, 1, {4}), V::kDuplicate);  // A part of it.
  EXPECT_EQ(Begin(8, 1, {1, 4}), V::kApply);   // Another client's number 1 is another push.
}

TEST_F(PushDedupTest, RowsOfShardsNotAppliedUnderTheNumberAreApplied) {
  Apply(7, 1, {2});
  ASSERT_EQ(Begin(7, 1, {0, 2}), V::kApply);
  EXPECT_EQ(to_apply_, Shards{0});
  d_.Finish(7, 1, Status::OK(), to_apply_);
  EXPECT_EQ(Begin(7, 1, {0, 2}), V::kDuplicate);
}

TEST_F(PushDedupTest, ARefusedReopeningKeepsWhatWasAppliedBefore) {
  Apply(7, 1, {2});
  ASSERT_EQ(Begin(7, 1, {0}), V::kApply);
  d_.Forget(7, 1);  // Shard 0 was frozen here: nothing applied.
  EXPECT_EQ(Begin(7, 1, {2}), V::kDuplicate);
  EXPECT_EQ(Begin(7, 1, {0}), V::kApply);
  d_.Finish(7, 1, Status::InvalidArgument("x"), to_apply_);  // A failed reopening keeps the first OK.
  EXPECT_EQ(Begin(7, 1, {2}), V::kDuplicate);
  EXPECT_TRUE(prior_.ok());
  // A first attempt refused is forgotten entirely.
  ASSERT_EQ(Begin(7, 2, {2}), V::kApply);
  d_.Forget(7, 2);
  EXPECT_EQ(Begin(7, 2, {2}), V::kApply);
}

TEST_F(PushDedupTest, ReplicasAndRecoveryRecordTheirShardsAndCheckpointsAllShards) {
  d_.RecordApplied(7, 1, Shards{3}, /*all_shards=*/false);  // A backup's replica.
  EXPECT_EQ(Begin(7, 1, {3}), V::kDuplicate);
  EXPECT_EQ(Begin(7, 1, {3, 5}), V::kApply);
  EXPECT_EQ(to_apply_, Shards{5});
  d_.RecordApplied(7, 2);  // From a checkpoint's list: its shards are not known.
  EXPECT_EQ(Begin(7, 2, {0, 9}), V::kDuplicate);
}

TEST_F(PushDedupTest, AppliedToListsThePartsWhoseRowsChangedTheShard) {
  Apply(7, 1, {1, 3});
  ASSERT_EQ(Begin(7, 2, {3}), V::kApply);
  d_.Finish(7, 2, Status::InvalidArgument("x"), to_apply_);  // Failed: nothing applied.
  Apply(8, 5, {2});
  d_.RecordApplied(9, 4);  // From a checkpoint: every shard.
  ASSERT_EQ(Begin(10, 1, {3}), V::kApply);
  d_.MarkApplied(10, 1);  // Its rows changed; its answer is not out yet.
  ASSERT_EQ(Begin(11, 1, {3}), V::kApply);  // Begun, but not applied: the freeze will refuse it.
  auto got = d_.AppliedTo(3);
  std::sort(got.begin(), got.end());
  EXPECT_EQ(got, (std::vector<std::pair<uint64_t, uint64_t>>{{7, 1}, {9, 4}, {10, 1}}));
  d_.Forget(11, 1);
  d_.Finish(10, 1, Status::OK(), to_apply_);
  EXPECT_EQ(d_.AppliedTo(3).size(), 3u);
}

TEST_F(PushDedupTest, AShardLostWhileApplyingCountsAsNotAppliedThere) {
  ASSERT_EQ(Begin(7, 1, {1, 3}), V::kApply);
  d_.MarkApplied(7, 1);
  d_.Unapply(7, 1, Shards{3});  // Shard 3 was failed over meanwhile; shard 1 stayed here.
  EXPECT_EQ(Begin(7, 1, {1}), V::kDuplicate);
  EXPECT_EQ(Begin(7, 1, {3}), V::kApply);
  d_.Forget(7, 1);
  ASSERT_EQ(Begin(7, 2, {3}), V::kApply);
  d_.MarkApplied(7, 2);
  d_.Unapply(7, 2, Shards{3});  // All of it lost: forgotten.
  EXPECT_EQ(Begin(7, 2, {3}), V::kApply);
}


// Sessions of trainers that ended are forgotten once idle for the configured time (a fake clock
// here); a session still pushing, or with a part still applying, is kept.
TEST(PushDedupForgetTest, IdleSessionsAreForgottenAndBusyOnesKept) {
  int64_t now = 0;
  PushDedup d(1 << 16, std::chrono::milliseconds(1000), [&now] { return now; });
  Status prior;
  Shards to_apply;
  ASSERT_EQ(d.Begin(1, 1, Shards{0}, &prior, &to_apply), V::kApply);
  d.Finish(1, 1, Status::OK(), to_apply);
  ASSERT_EQ(d.Begin(2, 1, Shards{0}, &prior, &to_apply), V::kApply);  // Still applying when idle.
  d.RecordApplied(3, 1, Shards{0});
  EXPECT_EQ(d.clients(), 3u);
  now = 900;
  ASSERT_EQ(d.Begin(3, 2, Shards{0}, &prior, &to_apply), V::kApply);  // Client 3 keeps pushing.
  d.Finish(3, 2, Status::OK(), to_apply);
  now = 1500;
  ASSERT_EQ(d.Begin(4, 1, Shards{0}, &prior, &to_apply), V::kApply);
  EXPECT_EQ(d.clients(), 3u) << "only client 1 was idle with every part done";
  EXPECT_EQ(d.forgotten(), 1u);
  EXPECT_EQ(d.Begin(3, 2, Shards{0}, &prior, &to_apply), V::kDuplicate) << "a busy session lost its window";
  EXPECT_EQ(d.Begin(2, 1, Shards{0}, &prior, &to_apply), V::kInProgress);
  EXPECT_TRUE(d.AppliedTo(0).size() >= 2);
}

}  // namespace
}  // namespace engram::ps
