// ShardMap: how a table's rows are split into virtual shards and which node owns each.
//
// A table of N rows has S virtual shards; shard i holds the contiguous rows
// [i * ceil(N/S), min(N, (i+1) * ceil(N/S))). Contiguous ranges keep a shard's rows in one arena
// and let checkpoints stream shard by shard; Engram row ids are hash outputs, so ranges balance
// load as well as a modulo would. The epoch increases with every change to the map; servers
// refuse requests routed with an older epoch (Code::kStaleShardMap).
//
// Thread-safety: immutable value; share freely. A new epoch is a new ShardMap.
#ifndef ENGRAM_CLUSTER_SHARD_MAP_H_
#define ENGRAM_CLUSTER_SHARD_MAP_H_

#include <cstdint>
#include <span>
#include <vector>

#include "engram/fast_mod.h"
#include "engram/status.h"

namespace engram::cluster {

// "No node": a shard without a backup.
inline constexpr uint32_t kNoNode = UINT32_MAX;

struct RowRange {
  uint64_t first = 0;
  uint64_t count = 0;
};

class ShardMap {
 public:
  // `owners[i]` is the node id owning shard i (its primary); owners.size() is the shard count.
  // `backups[i]`, if given, is the node holding shard i's replica (kNoNode: none; never the
  // owner). REQUIRES: 1 <= owners.size() <= num_rows.
  static StatusOr<ShardMap> Create(uint64_t num_rows, std::vector<uint32_t> owners, uint64_t epoch,
                                   std::vector<uint32_t> backups = {});
  // `num_shards` shards dealt round-robin over `nodes` (each node gets within one shard of the
  // same count, so bytes balance because shards are equal-sized).
  static StatusOr<ShardMap> Balanced(uint64_t num_rows, uint32_t num_shards, std::span<const uint32_t> nodes,
                                     uint64_t epoch);

  uint64_t num_rows() const { return num_rows_; }
  uint32_t num_shards() const { return static_cast<uint32_t>(owners_.size()); }
  uint64_t epoch() const { return epoch_; }
  // REQUIRES: row < num_rows().
  uint32_t ShardOf(uint64_t row) const { return static_cast<uint32_t>(div_.Div(row)); }
  uint64_t rows_per_shard() const { return rows_per_shard_; }
  // REQUIRES: shard < num_shards().
  RowRange Range(uint32_t shard) const;
  uint32_t Owner(uint32_t shard) const { return owners_[shard]; }
  const std::vector<uint32_t>& owners() const { return owners_; }
  uint32_t Backup(uint32_t shard) const { return backups_.empty() ? kNoNode : backups_[shard]; }
  // Empty when no shard has a backup.
  const std::vector<uint32_t>& backups() const { return backups_; }

 private:
  ShardMap(uint64_t n, std::vector<uint32_t> owners, uint64_t rows_per_shard, uint64_t epoch)
      : num_rows_(n), owners_(std::move(owners)), rows_per_shard_(rows_per_shard), div_(rows_per_shard),
        epoch_(epoch) {}

  uint64_t num_rows_;
  std::vector<uint32_t> owners_;
  std::vector<uint32_t> backups_;
  uint64_t rows_per_shard_;
  FastMod64 div_;
  uint64_t epoch_;
};

}  // namespace engram::cluster

#endif  // ENGRAM_CLUSTER_SHARD_MAP_H_
