// BackupLinks: the first unanswered replica to a backup node ends every other wait on it.
#include "ps/backup_links.h"

#include <gtest/gtest.h>

namespace engram::ps {
namespace {

TEST(BackupLinksTest, AnUnansweredWaitEndsTheOthersAndFailsNewOnesUntilTheMarkExpires) {
  int64_t now = 0;
  BackupLinks links(std::chrono::milliseconds(1000), [&now] { return now; });
  auto a = links.Begin(2);
  auto b = links.Begin(2);
  auto other = links.Begin(3);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  EXPECT_FALSE(b->load());
  links.End(2, a, /*answered=*/false);  // a timed out.
  EXPECT_TRUE(b->load()) << "b still waits on the silent node";
  EXPECT_FALSE(other->load()) << "another node's waits go on";
  EXPECT_EQ(links.Begin(2), nullptr) << "a new replica to the silent node was sent";
  links.End(2, b, /*answered=*/false);
  now = 1001;
  auto c = links.Begin(2);
  ASSERT_NE(c, nullptr) << "the mark expired: the node is tried again";
  EXPECT_FALSE(c->load());
}

// The daemon's setting: no silence, so a new replica waits again once the others were ended.
TEST(BackupLinksTest, WithoutSilenceNewWaitsGoOnAfterTheOthersEnded) {
  BackupLinks links(std::chrono::milliseconds(0));
  auto a = links.Begin(2);
  auto b = links.Begin(2);
  links.End(2, a, false);
  EXPECT_TRUE(b->load());
  auto c = links.Begin(2);
  ASSERT_NE(c, nullptr);
  EXPECT_FALSE(c->load());
}

TEST(BackupLinksTest, AnAnswerClearsTheMark) {
  int64_t now = 0;
  BackupLinks links(std::chrono::milliseconds(1000), [&now] { return now; });
  auto a = links.Begin(2);
  auto b = links.Begin(2);
  links.End(2, a, false);
  links.End(2, b, true);  // b's reply came in just before it gave up: the node lives.
  auto c = links.Begin(2);
  ASSERT_NE(c, nullptr);
  EXPECT_FALSE(c->load());
}

}  // namespace
}  // namespace engram::ps
