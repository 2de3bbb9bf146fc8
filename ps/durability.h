// Durability of a server's tables: the catalog, the write-ahead log of row after-images, and
// checkpoints, all under --data_dir; recovery after a crash.
//
// Files under the data directory:
//   catalog            the tables (schema, shard map, incarnation), rewritten atomically on
//                      every create and drop (write temp, fsync, rename, fsync directory)
//   wal/               storage::WriteAheadLog segments: one record per push or put with the
//                      after-image (row, version, value, optimizer state) of every row it changed,
//                      plus (client id, sequence) for pushes
//   checkpoints/<S>/   a checkpoint: every touched row of every table and the pushes known to be
//                      applied, consistent with log segments >= S (older segments are deleted)
//
// Every logged row carries the version the write gave it. Pushes log each row's summed gradient
// (a third of Adam's value + moments), puts and restores whole images. A push's record is
// appended while the write locks of the shards it touched are held, so the log holds each
// shard's writes in the order they were applied; replay applies a gradient only to the version
// right before it and skips what a checkpoint already holds, so a checkpoint may be fuzzy (rows
// copied while pushes continue) and nothing is applied twice. A push is acknowledged only after
// its record is on disk (sync mode). Recovery
// restores the exactly-once table as well, so a client retransmitting an acknowledged push (or
// one whose acknowledgement the crash ate) is answered, not applied again.
//
// Thread-safety: all methods are thread-safe.
#ifndef ENGRAM_PS_DURABILITY_H_
#define ENGRAM_PS_DURABILITY_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "engram/status.h"
#include "ps/push_dedup.h"
#include "ps/table_registry.h"
#include "storage/shard.h"
#include "storage/wal.h"

namespace engram::ps {

// kTables and kTableOwners appear in checkpoints only: the tables a checkpoint holds, and which
// node owned each of their shards then (a restore refuses when this node's shards changed).
enum class RecordKind : uint8_t { kPush = 1, kPut = 2, kCheckpointRows = 3, kApplied = 4, kTables = 5, kTableOwners = 6,
                                  kAppliedShards = 7 };

// Serialises one write into a log record (a storage::RowImageSink): kPush records hold each
// row's summed gradient and resulting version; kPut and kCheckpointRows records hold whole row
// images (value and optimizer state) with their versions.
class LogRecord final : public storage::RowImageSink {
 public:
  LogRecord(RecordKind kind, const Table& table, uint64_t client = 0, uint64_t seq = 0);
  void Add(uint64_t row, uint64_t version, const uint8_t* value, const uint8_t* state) override;
  void AddGradient(uint64_t row, uint64_t version, const float* grad) override;
  // The finished record (patches the row count in).
  std::span<const uint8_t> bytes();
  uint32_t rows() const { return rows_; }

 private:
  std::vector<uint8_t> buf_;
  size_t count_at_ = 0;
  uint32_t rows_ = 0;
  size_t value_bytes_, state_bytes_;  // Per row: kPush records carry dim f32 and no state.
};

struct DurabilityOptions {
  std::string dir;        // The data directory (created if missing).
  bool sync = true;       // Acknowledge writes only once their record is on disk.
  int sync_interval_ms = 100;  // Without sync: how often the log is synced.
};

struct RecoveryStats {
  uint64_t tables = 0, checkpoint_rows = 0, log_records = 0, log_rows = 0, applied_pushes = 0;
  uint64_t checkpoint = 0;  // The checkpoint recovered from (0: none).
  std::vector<std::string> torn_tails;
  // Log segments damaged in the middle (storage::WalReplayStats::corrupt): recovery stopped at
  // the damage, so acknowledged writes after it are missing here.
  std::vector<std::string> corrupt;
};

struct CheckpointStats {
  uint64_t checkpoint = 0;  // Its number (the first log segment it does not cover).
  uint64_t rows = 0, bytes = 0;
  double seconds = 0;
};

class Durability {
 public:
  // Opens the data directory, recovers `registry` and `dedup` from the catalog, the newest
  // checkpoint and the log, then opens a fresh log segment for new writes. `registry` must be
  // empty. A corrupt catalog or checkpoint is an error (the server must not start and
  // overwrite what is there); a torn log tail is normal after a crash (reported in stats), a log
  // damaged mid-segment is reported in stats too (the caller decides whether to serve).
  static StatusOr<std::unique_ptr<Durability>> Open(const DurabilityOptions& options, TableRegistry* registry,
                                                    PushDedup* dedup, RecoveryStats* stats);

  // The incarnation for a table about to be created (never reused in this data directory).
  uint64_t NextIncarnation();
  // Rewrites the catalog from the registry's tables.
  Status SaveCatalog(const TableRegistry& registry);

  // Appends a finished record; returns its LSN. Call from WriteLog::logged (under the locks).
  StatusOr<uint64_t> Append(LogRecord& record);
  // Appends a record of push parts applied (a moved shard's exactly-once entries); returns its
  // LSN. Recovery puts them back in the exactly-once table, as it does a checkpoint's.
  StatusOr<uint64_t> AppendApplied(const std::vector<PushDedup::Applied>& applied);
  // Waits until the record at `lsn` is durable (no-op in async mode).
  Status Sync(uint64_t lsn);

  // Writes a checkpoint of every table and drops the log segments it covers. One at a time.
  // A checkpoint with a `label` is kept (for RestoreTable) when later ones replace it; unlabeled
  // ones are deleted then.
  StatusOr<CheckpointStats> Checkpoint(const TableRegistry& registry, PushDedup* dedup, const std::string& label = "");

  // Rolls `table` back, in place, to its rows in the newest checkpoint labeled `label`: every
  // row in the checkpoint takes its image, every other touched row its initial value, each as a
  // new version written to the log (so recovery replays the restore). Writes to the table wait
  // meanwhile; pulls may see a mix of old and restored rows until it returns. NotFound if no
  // checkpoint has that label; FailedPrecondition if the table was created after it (or dropped
  // and created again since). Returns {restored rows, reset rows}.
  StatusOr<std::pair<uint64_t, uint64_t>> RestoreTable(Table* table, const std::string& label);
  // Stops keeping the checkpoints labeled `label`: deletes them, except the newest checkpoint,
  // which recovery still needs and which only loses its label (the next checkpoint replaces
  // it). Returns how many lost the label; NotFound if none had it.
  StatusOr<uint64_t> DropCheckpointLabel(const std::string& label);

  bool sync_mode() const { return options_.sync; }
  uint64_t records_logged() const { return records_.load(); }

 private:
  explicit Durability(DurabilityOptions o) : options_(std::move(o)) {}
  Status LoadCatalog(TableRegistry* registry, RecoveryStats* stats);
  Status ApplyRecord(std::span<const uint8_t> payload, TableRegistry* registry, PushDedup* dedup,
                     RecoveryStats* stats, bool from_checkpoint);

  const DurabilityOptions options_;
  std::unique_ptr<storage::WriteAheadLog> wal_;
  std::mutex catalog_mu_;       // Serialises catalog rewrites.
  std::mutex checkpoint_mu_;    // One checkpoint at a time.
  std::atomic<uint64_t> next_incarnation_{1};
  std::atomic<uint64_t> records_{0};
};

}  // namespace engram::ps

#endif  // ENGRAM_PS_DURABILITY_H_
