// WriteAheadLog: an append-only, checksummed record log in numbered segment files, with group
// commit.
//
// Files: <dir>/wal-<segment, 16 digits>.log. Each record is [u32 length][u32 crc32c of the
// payload][payload]. A process never appends to a segment it did not create: Open() starts a
// new one, so a segment left with a torn tail by a crash stays exactly as the crash left it.
//
// Durability: Append() copies the record into an in-memory buffer and returns its log sequence
// number (LSN, increasing) at once; a writer thread writes the buffer to the segment and
// fdatasyncs it, one write and one sync for every record that accumulated meanwhile (group
// commit), double-buffered so appends continue during the I/O. Sync(lsn) returns once every
// record up to lsn is on disk. With `sync == false` the writer syncs at most every
// `sync_interval_ms`, and Sync(lsn) returns once the record is in the kernel (a process crash
// loses nothing; a machine crash can lose up to that interval of acknowledged data).
//
// Thread-safety: all methods are thread-safe. Sync() blocks on I/O: never call it on an I/O
// thread that others wait on.
#ifndef ENGRAM_STORAGE_WAL_H_
#define ENGRAM_STORAGE_WAL_H_

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "engram/status.h"

namespace engram::storage {

struct WalOptions {
  bool sync = true;            // Sync() waits for fdatasync; false: a timer syncs.
  int sync_interval_ms = 100;  // With sync == false: how often the timer syncs.
};

struct WalReplayStats {
  uint64_t segments = 0, records = 0, bytes = 0;
  // Segments whose last record was cut short or failed its checksum (a crash while writing an
  // unacknowledged record): replay stopped there. "name: offset of size" each.
  std::vector<std::string> torn_tails;
  // Segments with a bad record followed by a valid one: not a crash (a crash tears only the end
  // of what was being written) but damage (a bad sector, a bad copy), and acknowledged records
  // after it are lost. Replay stopped at the bad record. "name: offset of size, ..." each.
  std::vector<std::string> corrupt;
};

class WriteAheadLog {
 public:
  static StatusOr<std::unique_ptr<WriteAheadLog>> Open(const std::string& dir, const WalOptions& options);
  ~WriteAheadLog();  // Syncs and closes.

  // Appends one record (at most 2^31 bytes); returns its LSN. After a write error the log
  // refuses every later append (IoError): the caller must stop accepting writes.
  StatusOr<uint64_t> Append(std::span<const uint8_t> payload);
  Status Sync(uint64_t lsn);
  // Starts a new segment (the old one is synced first) and returns its number: records
  // appended afterwards go there.
  StatusOr<uint64_t> Rotate();
  // Deletes the segments numbered below `segment` (after a checkpoint covers them).
  Status DropSegmentsBelow(uint64_t segment);
  uint64_t current_segment() const;
  uint64_t synced_lsn() const;

  // Calls fn(payload) for each record of the segments numbered >= first_segment, in order. A
  // torn tail ends its segment (replay goes on with the next); a damaged record ends the replay
  // (see WalReplayStats: corrupt; without `stats`, DataLoss). fn's error stops the replay.
  static Status Replay(const std::string& dir, uint64_t first_segment,
                       const std::function<Status(std::span<const uint8_t>)>& fn, WalReplayStats* stats);
  // Segment numbers present in dir, ascending.
  static StatusOr<std::vector<uint64_t>> Segments(const std::string& dir);
  static std::string SegmentPath(const std::string& dir, uint64_t segment);

 private:
  WriteAheadLog(std::string dir, WalOptions o) : dir_(std::move(dir)), options_(o) {}
  Status OpenSegmentLocked(uint64_t segment);
  void WriterLoop();

  const std::string dir_;
  const WalOptions options_;
  static constexpr size_t kMaxBuffered = size_t{256} << 20;  // Appends wait beyond this.
  mutable std::mutex mu_;
  std::condition_variable work_cv_;  // Wakes the writer.
  std::condition_variable done_cv_;  // Wakes appenders and syncers.
  int fd_ = -1;                 // GUARDED_BY(mu_); the writer uses it outside mu_ while writing_.
  uint64_t segment_ = 0;        // GUARDED_BY(mu_)
  std::vector<uint8_t> buffer_;  // GUARDED_BY(mu_): framed records not yet handed to the writer.
  uint64_t next_lsn_ = 1;       // GUARDED_BY(mu_): LSN of the next record.
  uint64_t written_lsn_ = 0;    // GUARDED_BY(mu_): every record <= this is in the kernel.
  uint64_t synced_lsn_ = 0;     // GUARDED_BY(mu_): every record <= this is on disk.
  bool writing_ = false;        // GUARDED_BY(mu_): the writer is doing I/O.
  bool sync_wanted_ = false;    // GUARDED_BY(mu_): someone waits for an fdatasync (async mode: Rotate).
  Status failed_;               // GUARDED_BY(mu_): sticky write/sync error.
  bool stop_ = false;           // GUARDED_BY(mu_)
  std::thread writer_;
};

}  // namespace engram::storage

#endif  // ENGRAM_STORAGE_WAL_H_
