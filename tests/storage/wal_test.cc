// WriteAheadLog and CRC-32C: framing, replay, torn tails, rotation, group commit.
#include "storage/wal.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "storage/crc32c.h"

namespace engram::storage {
namespace {

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/engram_wal_test_XXXXXX";
    path_ = mkdtemp(tmpl);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

std::vector<uint8_t> Bytes(const std::string& s) { return {s.begin(), s.end()}; }

std::vector<std::string> ReplayAll(const std::string& dir, uint64_t first, WalReplayStats* stats) {
  std::vector<std::string> out;
  EXPECT_TRUE(WriteAheadLog::Replay(dir, first, [&](std::span<const uint8_t> p) {
                out.emplace_back(p.begin(), p.end());
                return Status::OK();
              }, stats).ok());
  return out;
}

TEST(Crc32cTest, MatchesTheCastagnoliCheckValue) {
  EXPECT_EQ(Crc32c("123456789", 9), 0xE3069283u);
  EXPECT_EQ(Crc32c("", 0), 0u);
  // Continuing a checksum equals checksumming the concatenation.
  EXPECT_EQ(Crc32c("6789", 4, Crc32c("12345", 5)), 0xE3069283u);
}

TEST(WalTest, RecordsComeBackInOrderAfterReopen) {
  TempDir d;
  {
    auto log = WriteAheadLog::Open(d.path(), {});
    ASSERT_TRUE(log.ok()) << log.status().ToString();
    uint64_t last = 0;
    for (int i = 0; i < 100; ++i) {
      auto lsn = (*log)->Append(Bytes("record " + std::to_string(i)));
      ASSERT_TRUE(lsn.ok());
      EXPECT_GT(*lsn, last);
      last = *lsn;
    }
    ASSERT_TRUE((*log)->Sync(last).ok());
    EXPECT_GE((*log)->synced_lsn(), last);
  }
  auto reopened = WriteAheadLog::Open(d.path(), {});  // Starts a new segment; the old stays.
  ASSERT_TRUE(reopened.ok());
  ASSERT_TRUE((*reopened)->Append(Bytes("after reopen")).ok());
  reopened->reset();
  WalReplayStats stats;
  auto got = ReplayAll(d.path(), 0, &stats);
  ASSERT_EQ(got.size(), 101u);
  EXPECT_EQ(got[0], "record 0");
  EXPECT_EQ(got[99], "record 99");
  EXPECT_EQ(got[100], "after reopen");
  EXPECT_EQ(stats.segments, 2u);
  EXPECT_TRUE(stats.torn_tails.empty());
}

TEST(WalTest, ATornOrCorruptTailEndsItsSegmentAndIsReported) {
  TempDir d;
  {
    auto log = WriteAheadLog::Open(d.path(), {});
    ASSERT_TRUE(log.ok());
    for (int i = 0; i < 3; ++i) ASSERT_TRUE((*log)->Append(Bytes(std::string(100, char('a' + i)))).ok());
  }
  const std::string seg = WriteAheadLog::SegmentPath(d.path(), 1);
  const auto size = std::filesystem::file_size(seg);
  std::filesystem::resize_file(seg, size - 10);  // The last record loses its end.
  WalReplayStats stats;
  auto got = ReplayAll(d.path(), 0, &stats);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[1], std::string(100, 'b'));
  ASSERT_EQ(stats.torn_tails.size(), 1u);
  // A flipped byte inside the second record: its checksum fails, replay keeps only the first.
  const int fd = ::open(seg.c_str(), O_WRONLY);
  ASSERT_GE(fd, 0);
  const char x = 'X';
  ASSERT_EQ(::pwrite(fd, &x, 1, 8 + 100 + 8 + 50), 1);
  ::close(fd);
  WalReplayStats stats2;
  EXPECT_EQ(ReplayAll(d.path(), 0, &stats2).size(), 1u);
  EXPECT_EQ(stats2.torn_tails.size(), 1u);
}

// One byte flipped in the middle of a segment (a bad sector, a bad copy): a valid record follows
// the bad one, so it is damage, not a crash's torn tail, and replay stops there.
TEST(WalTest, ABadRecordFollowedByAValidOneIsCorruptionNotATornTail) {
  TempDir d;
  {
    auto log = WriteAheadLog::Open(d.path(), {});
    ASSERT_TRUE(log.ok());
    for (int i = 0; i < 3; ++i) ASSERT_TRUE((*log)->Append(Bytes(std::string(100, char('a' + i)))).ok());
    ASSERT_TRUE((*log)->Rotate().ok());
    ASSERT_TRUE((*log)->Append(Bytes("later")).ok());
  }
  const std::string seg = WriteAheadLog::SegmentPath(d.path(), 1);
  const int fd = ::open(seg.c_str(), O_WRONLY);
  ASSERT_GE(fd, 0);
  const char x = 'X';
  ASSERT_EQ(::pwrite(fd, &x, 1, 8 + 100 + 8 + 50), 1);  // Inside the second record.
  ::close(fd);
  WalReplayStats stats;
  auto got = ReplayAll(d.path(), 0, &stats);
  ASSERT_EQ(got.size(), 1u) << "nothing after the damage is replayed, in this segment or a later one";
  EXPECT_TRUE(stats.torn_tails.empty());
  ASSERT_EQ(stats.corrupt.size(), 1u);
  EXPECT_NE(stats.corrupt[0].find("108 of 324"), std::string::npos) << stats.corrupt[0];
}

// A zeroed tail (a file extended but its blocks never written) is a torn tail, not records.
TEST(WalTest, AZeroedTailIsATornTail) {
  TempDir d;
  {
    auto log = WriteAheadLog::Open(d.path(), {});
    ASSERT_TRUE(log.ok());
    ASSERT_TRUE((*log)->Append(Bytes("one")).ok());
  }
  const std::string seg = WriteAheadLog::SegmentPath(d.path(), 1);
  std::filesystem::resize_file(seg, std::filesystem::file_size(seg) + 4096);
  WalReplayStats stats;
  EXPECT_EQ(ReplayAll(d.path(), 0, &stats).size(), 1u);
  EXPECT_EQ(stats.torn_tails.size(), 1u);
  EXPECT_TRUE(stats.corrupt.empty());
}

TEST(WalTest, RotationAndDroppingOldSegments) {
  TempDir d;
  auto log = WriteAheadLog::Open(d.path(), {});
  ASSERT_TRUE(log.ok());
  ASSERT_TRUE((*log)->Append(Bytes("old")).ok());
  auto seg = (*log)->Rotate();
  ASSERT_TRUE(seg.ok());
  EXPECT_EQ(*seg, 2u);
  ASSERT_TRUE((*log)->Append(Bytes("new")).ok());
  ASSERT_TRUE((*log)->Sync((*log)->synced_lsn() + 1).ok());
  EXPECT_EQ(ReplayAll(d.path(), 2, nullptr), std::vector<std::string>{"new"});
  ASSERT_TRUE((*log)->DropSegmentsBelow(2).ok());
  EXPECT_EQ(*WriteAheadLog::Segments(d.path()), std::vector<uint64_t>{2});
  EXPECT_EQ(ReplayAll(d.path(), 0, nullptr), std::vector<std::string>{"new"});
}

TEST(WalTest, ConcurrentWritersAreAllDurableAfterTheirSync) {
  TempDir d;
  auto log = WriteAheadLog::Open(d.path(), {});
  ASSERT_TRUE(log.ok());
  std::vector<std::thread> writers;
  for (int t = 0; t < 4; ++t) {
    writers.emplace_back([&, t] {
      for (int i = 0; i < 50; ++i) {
        auto lsn = (*log)->Append(Bytes(std::to_string(t) + ":" + std::to_string(i)));
        ASSERT_TRUE(lsn.ok());
        ASSERT_TRUE((*log)->Sync(*lsn).ok());
        ASSERT_GE((*log)->synced_lsn(), *lsn);
      }
    });
  }
  for (auto& w : writers) w.join();
  EXPECT_EQ(ReplayAll(d.path(), 0, nullptr).size(), 200u);
}

TEST(WalTest, AsyncModeSyncsOnATimer) {
  TempDir d;
  WalOptions o;
  o.sync = false;
  o.sync_interval_ms = 10;
  auto log = WriteAheadLog::Open(d.path(), o);
  ASSERT_TRUE(log.ok());
  auto lsn = (*log)->Append(Bytes("x"));
  ASSERT_TRUE(lsn.ok());
  EXPECT_TRUE((*log)->Sync(*lsn).ok());  // Returns at once.
  for (int i = 0; i < 200 && (*log)->synced_lsn() < *lsn; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_GE((*log)->synced_lsn(), *lsn);
}

}  // namespace
}  // namespace engram::storage
