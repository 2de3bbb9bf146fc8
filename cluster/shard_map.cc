// ShardMap construction and range arithmetic.
#include "cluster/shard_map.h"

#include <algorithm>
#include <string>

namespace engram::cluster {

StatusOr<ShardMap> ShardMap::Create(uint64_t num_rows, std::vector<uint32_t> owners, uint64_t epoch,
                                    std::vector<uint32_t> backups) {
  if (owners.empty()) return Status::InvalidArgument("a shard map needs at least one shard");
  if (num_rows == 0) return Status::InvalidArgument("a shard map needs at least one row");
  if (owners.size() > num_rows) {
    return Status::InvalidArgument(std::to_string(owners.size()) + " shards for " + std::to_string(num_rows) +
                                   " rows: every shard needs at least one row");
  }
  const uint64_t per = (num_rows + owners.size() - 1) / owners.size();
  // With ceil-sized shards the last ones may be empty (e.g. 10 rows in 4 shards of 3): refuse a
  // shard count that leaves a shard without rows, so every shard is a real range.
  if ((owners.size() - 1) * per >= num_rows) {
    return Status::InvalidArgument(std::to_string(owners.size()) + " shards of " + std::to_string(per) +
                                   " rows leave the last shard empty for " + std::to_string(num_rows) +
                                   " rows; choose fewer shards");
  }
  if (!backups.empty()) {
    if (backups.size() != owners.size()) return Status::InvalidArgument("a backup entry per shard, or none");
    for (size_t i = 0; i < owners.size(); ++i) {
      if (backups[i] == owners[i]) return Status::InvalidArgument("shard " + std::to_string(i) + "'s backup is its owner");
    }
    if (std::all_of(backups.begin(), backups.end(), [](uint32_t b) { return b == kNoNode; })) backups.clear();
  }
  ShardMap m(num_rows, std::move(owners), per, epoch);
  m.backups_ = std::move(backups);
  return m;
}

StatusOr<ShardMap> ShardMap::Balanced(uint64_t num_rows, uint32_t num_shards, std::span<const uint32_t> nodes,
                                      uint64_t epoch) {
  if (nodes.empty()) return Status::InvalidArgument("no nodes to place shards on");
  std::vector<uint32_t> owners(num_shards);
  for (uint32_t i = 0; i < num_shards; ++i) owners[i] = nodes[i % nodes.size()];
  return Create(num_rows, std::move(owners), epoch);
}

RowRange ShardMap::Range(uint32_t shard) const {
  const uint64_t first = uint64_t{shard} * rows_per_shard_;
  const uint64_t end = std::min(num_rows_, first + rows_per_shard_);
  return {first, end - first};
}

}  // namespace engram::cluster
