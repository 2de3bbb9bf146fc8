// TableRegistry: the tables a server holds, and Table: one table's locally owned shards.
//
// Server logic without the network: the transport (next issue) decodes a request, looks the
// table up here and calls Pull/Push. A Table routes each row to its shard through the table's
// ShardMap; a batch is validated as a whole (row ranges, shard ownership, finite gradients)
// before any shard changes, so a refused request changes nothing.
//
// Thread-safety: all methods are thread-safe. Tables are shared_ptr: a request holding one
// finishes safely even if the table is dropped meanwhile.
#ifndef ENGRAM_PS_TABLE_REGISTRY_H_
#define ENGRAM_PS_TABLE_REGISTRY_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "cluster/shard_map.h"
#include "engram/status.h"
#include "engram/table.h"
#include "storage/shard.h"

namespace engram::ps {

struct TableStats {
  uint64_t touched_rows = 0;
  uint64_t bytes_per_row = 0;
  uint32_t local_shards = 0;
  bool cached = false;            // Some rows live in the cold tier.
  storage::RowCacheStats cache;   // Summed over the cached shards.
  uint64_t cold_puts = 0, cold_reads = 0;
};

// Durability hook of a write: `sink` receives every changed row's after-image while the row is
// held, and `logged()` runs once all rows are applied, still under the write locks of the
// shards involved (it appends the write-ahead log record), so each shard's records are in the
// log in the order its writes were applied. A null hook: no locks, no log.
struct WriteLog {
  storage::RowImageSink* sink = nullptr;
  std::function<Status()> logged;
};

class Table {
 public:
  // Creates the shards of `map` owned by `node_id`. `incarnation` tells this table apart from
  // an earlier one of the same name in the write-ahead log.
  // A schema with dram_bytes > 0 keeps the rows beyond it in a cold tier under `cold_dir`
  // (FailedPrecondition when empty: the server has no data directory).
  static StatusOr<std::shared_ptr<Table>> Create(const TableSchema& schema, cluster::ShardMap map,
                                                 uint32_t node_id, const storage::ShardOptions& options,
                                                 uint64_t incarnation = 0, const std::string& cold_dir = "");
  uint64_t incarnation() const { return incarnation_; }

  const TableSchema& schema() const { return schema_; }
  const cluster::ShardMap& shard_map() const { return map_; }
  uint32_t node_id() const { return node_id_; }
  TableStats stats() const;
  // The local shard, or nullptr when another node owns it.
  const storage::Shard* shard(uint32_t index) const { return shards_[index].get(); }

  // Values at rest of `rows`, packed in request order. OutOfRange for a row outside the
  // table; FailedPrecondition for a row whose shard is not on this node.
  Status Pull(std::span<const uint64_t> rows, uint8_t* out /* (n, value_bytes) */) const;
  // Gradients for `rows` (f32, dim each); duplicates summed; all-or-nothing validation.
  Status Push(std::span<const uint64_t> rows, const float* grads /* (n, dim) */, const WriteLog* log = nullptr);
  // Overwrites rows with values at rest.
  Status Put(std::span<const uint64_t> rows, const uint8_t* values /* (n, value_bytes) */,
             const WriteLog* log = nullptr);
  // Recovery: a logged after-image (see storage::Shard::Restore). Rows of shards this node does
  // not hold are skipped (OK).
  Status Restore(uint64_t row, uint64_t version, const uint8_t* value, const uint8_t* state);
  // Recovery: a logged optimizer step (see storage::Shard::ReplayGradient); rows of shards this
  // node does not hold are skipped (OK).
  Status ReplayGradient(uint64_t row, uint64_t version, const float* grad);
  // Rewrites a whole row image (see storage::Shard::Rewrite); rows of shards this node does not
  // hold are skipped (OK). REQUIRES: the caller holds LockWrites().
  Status Rewrite(uint64_t row, const uint8_t* value, const uint8_t* state, storage::RowImageSink* sink);
  // Excludes every logged write of this table while the returned locks live (checkpoints).
  std::vector<std::unique_lock<std::mutex>> LockWrites() const;
  // The table was dropped: its cold tier's files go when the last reference does.
  void MarkDropped();

 private:
  Table(TableSchema schema, cluster::ShardMap map, uint32_t node_id, std::unique_ptr<storage::ColdStore> cold,
        std::vector<std::unique_ptr<storage::Shard>> shards, uint64_t incarnation)
      : schema_(std::move(schema)), map_(std::move(map)), node_id_(node_id), cold_(std::move(cold)),
        shards_(std::move(shards)), write_mu_(new std::mutex[shards_.size()]), incarnation_(incarnation) {}
  // Locks the write mutexes of the shards in `by_shard` that have rows, in ascending order.
  std::vector<std::unique_lock<std::mutex>> LockShards(const std::vector<std::vector<uint32_t>>& by_shard) const;

  // The local shard holding every row of `rows`, or nullptr if they span shards (or are bad).
  storage::Shard* SingleLocalShard(std::span<const uint64_t> rows) const;
  // Groups row indexes by shard; fails on rows outside the table or on non-local shards.
  Status Route(std::span<const uint64_t> rows, std::vector<std::vector<uint32_t>>* by_shard) const;

  TableSchema schema_;
  cluster::ShardMap map_;
  uint32_t node_id_;
  std::unique_ptr<storage::ColdStore> cold_;  // Shared by the cached shards; outlives them.
  std::vector<std::unique_ptr<storage::Shard>> shards_;  // Index = shard id; null if not local.
  std::unique_ptr<std::mutex[]> write_mu_;  // Per shard: orders logged writes with their log records.
  uint64_t incarnation_;
};

class TableRegistry {
 public:
  explicit TableRegistry(uint32_t node_id = 0, storage::ShardOptions options = storage::ShardOptions{})
      : node_id_(node_id), options_(options) {}

  // Creates a table with `num_shards` virtual shards, all owned by this node (single-node mode).
  // AlreadyExists if the name is taken.
  StatusOr<std::shared_ptr<Table>> CreateTable(const TableSchema& schema, uint32_t num_shards);
  // Creates a table placed by `map`; this node holds the shards `map` gives `node_id`.
  StatusOr<std::shared_ptr<Table>> CreateTable(const TableSchema& schema, cluster::ShardMap map, uint32_t node_id,
                                               uint64_t incarnation = 0);
  // Where tables with a DRAM budget keep their cold tiers (a directory this registry owns; set
  // before such tables are created). Empty: such tables are refused.
  void SetColdDir(std::string dir);
  // All tables, by name.
  std::vector<std::shared_ptr<Table>> Tables() const;
  // Bytes of rows materialised over all tables (value slots and optimizer state).
  uint64_t TouchedBytes() const;
  Status DropTable(const std::string& name);
  // NotFound if no table has that name.
  StatusOr<std::shared_ptr<Table>> Get(const std::string& name) const;
  std::vector<std::string> List() const;

 private:
  const uint32_t node_id_;
  const storage::ShardOptions options_;
  mutable std::mutex mu_;
  std::string cold_dir_;  // GUARDED_BY(mu_)
  std::map<std::string, std::shared_ptr<Table>> tables_;  // GUARDED_BY(mu_)
};

}  // namespace engram::ps

#endif  // ENGRAM_PS_TABLE_REGISTRY_H_
