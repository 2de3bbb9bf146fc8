// Table routing and the registry of tables.
#include "ps/table_registry.h"

#include <cmath>
#include <cstring>
#include <random>
#include <string>

#include "storage/optimizer.h"
#include "storage/row_cache.h"

namespace engram::ps {

StatusOr<std::shared_ptr<Table>> Table::Create(const TableSchema& schema, cluster::ShardMap map, uint32_t node_id,
                                               const storage::ShardOptions& options, uint64_t incarnation,
                                               const std::string& cold_dir) {
  ENGRAM_RETURN_IF_ERROR(schema.Validate());
  if (map.num_rows() != schema.num_rows) {
    return Status::InvalidArgument("shard map covers " + std::to_string(map.num_rows()) + " rows, table '" +
                                   schema.name + "' has " + std::to_string(schema.num_rows));
  }
  uint32_t local = 0;
  uint64_t local_rows = 0;
  for (uint32_t i = 0; i < map.num_shards(); ++i) {
    if (map.Owner(i) == node_id) ++local, local_rows += map.Range(i).count;
  }
  storage::ShardOptions so = options;
  std::unique_ptr<storage::ColdStore> cold;
  const size_t state_bytes = IsTrainable(schema.dtype) ? storage::OptimizerStateBytes(schema.optimizer, schema.dim) : 0;
  const size_t slot_bytes = storage::RowCache::BytesPerSlot(schema.value_bytes(), state_bytes);
  if (schema.dram_bytes > 0 && local > 0 && schema.dram_bytes / slot_bytes < local_rows) {
    if (cold_dir.empty()) {
      return Status::FailedPrecondition("table '" + schema.name + "' sets dram_bytes (a cold tier for the rows beyond "
                                        "it), but this server has no --data_dir to keep them in");
    }
    so.cache_rows = schema.dram_bytes / slot_bytes / local;
    if (so.cache_rows < so.cache.ways) {
      return Status::InvalidArgument("table '" + schema.name + "': dram_bytes " + std::to_string(schema.dram_bytes) +
                                     " holds " + std::to_string(so.cache_rows) + " rows per shard of " +
                                     std::to_string(slot_bytes) + " bytes each; at least " +
                                     std::to_string(so.cache.ways) + " are needed");
    }
    // A fresh directory per table object: a dropped table's store may still be closing.
    std::random_device rd;
    const std::string dir = cold_dir + "/" + schema.name + "." + std::to_string(incarnation) + "." +
                            std::to_string((uint64_t{rd()} << 32) | rd());
    ENGRAM_ASSIGN_OR_RETURN(cold, storage::ColdStore::Open(dir, schema.value_bytes(), state_bytes, {}));
    so.cold = cold.get();
  }
  std::vector<std::unique_ptr<storage::Shard>> shards(map.num_shards());
  for (uint32_t i = 0; i < map.num_shards(); ++i) {
    if (map.Owner(i) != node_id) continue;
    const cluster::RowRange r = map.Range(i);
    ENGRAM_ASSIGN_OR_RETURN(shards[i], storage::Shard::Create(schema, r.first, r.count, so));
  }
  return std::shared_ptr<Table>(new Table(schema, std::move(map), node_id, std::move(cold), std::move(shards), incarnation));
}

void Table::MarkDropped() {
  if (cold_) cold_->RemoveOnClose();
}

TableStats Table::stats() const {
  TableStats s;
  for (const auto& sh : shards_) {
    if (!sh) continue;
    const storage::ShardStats ss = sh->stats();
    s.touched_rows += ss.touched_rows;
    s.bytes_per_row = ss.bytes_per_row;
    ++s.local_shards;
    if (ss.cached) {
      s.cached = true;
      s.cache.capacity += ss.cache.capacity;
      s.cache.resident += ss.cache.resident;
      s.cache.hits += ss.cache.hits;
      s.cache.misses += ss.cache.misses;
      s.cache.admitted += ss.cache.admitted;
      s.cache.rejected += ss.cache.rejected;
      s.cache.evictions += ss.cache.evictions;
      s.cache.write_throughs += ss.cache.write_throughs;
    }
  }
  if (cold_) {
    s.cold_puts = cold_->puts();
    s.cold_reads = cold_->reads();
  }
  return s;
}

Status Table::Route(std::span<const uint64_t> rows, std::vector<std::vector<uint32_t>>* by_shard) const {
  by_shard->assign(map_.num_shards(), {});
  for (size_t i = 0; i < rows.size(); ++i) {
    if (rows[i] >= schema_.num_rows) {
      return Status::OutOfRange("row " + std::to_string(rows[i]) + " (index " + std::to_string(i) +
                                ") is outside table '" + schema_.name + "' of " + std::to_string(schema_.num_rows) +
                                " rows");
    }
    const uint32_t s = map_.ShardOf(rows[i]);
    if (!shards_[s]) {
      return Status::FailedPrecondition("row " + std::to_string(rows[i]) + " belongs to shard " + std::to_string(s) +
                                        ", which this node does not own");
    }
    (*by_shard)[s].push_back(static_cast<uint32_t>(i));
  }
  return Status::OK();
}

Status Table::Pull(std::span<const uint64_t> rows, uint8_t* out) const {
  const size_t vb = schema_.value_bytes();
  // Fast path: the whole batch in one local shard needs no regrouping (common with one shard
  // per node, and for small decode batches).
  if (const storage::Shard* shard = SingleLocalShard(rows)) return shard->Gather(rows, out);
  std::vector<std::vector<uint32_t>> by_shard;
  ENGRAM_RETURN_IF_ERROR(Route(rows, &by_shard));
  std::vector<uint64_t> ids;
  std::vector<uint8_t> buf;
  for (uint32_t s = 0; s < by_shard.size(); ++s) {
    const auto& idx = by_shard[s];
    if (idx.empty()) continue;
    ids.resize(idx.size());
    for (size_t k = 0; k < idx.size(); ++k) ids[k] = rows[idx[k]];
    buf.resize(idx.size() * vb);
    ENGRAM_RETURN_IF_ERROR(shards_[s]->Gather(ids, buf.data()));
    for (size_t k = 0; k < idx.size(); ++k) std::memcpy(out + size_t{idx[k]} * vb, buf.data() + k * vb, vb);
  }
  return Status::OK();
}

storage::Shard* Table::SingleLocalShard(std::span<const uint64_t> rows) const {
  if (rows.empty() || rows[0] >= schema_.num_rows) return nullptr;
  const uint32_t s0 = map_.ShardOf(rows[0]);
  if (!shards_[s0]) return nullptr;
  const cluster::RowRange r = map_.Range(s0);
  for (uint64_t row : rows) {
    if (row - r.first >= r.count || row < r.first) return nullptr;
  }
  return shards_[s0].get();
}

std::vector<std::unique_lock<std::mutex>> Table::LockShards(const std::vector<std::vector<uint32_t>>& by_shard) const {
  std::vector<std::unique_lock<std::mutex>> locks;
  for (uint32_t s = 0; s < by_shard.size(); ++s) {
    if (!by_shard[s].empty()) locks.emplace_back(write_mu_[s]);
  }
  return locks;
}

std::vector<std::unique_lock<std::mutex>> Table::LockWrites() const {
  std::vector<std::unique_lock<std::mutex>> locks;
  for (uint32_t s = 0; s < shards_.size(); ++s) {
    if (shards_[s]) locks.emplace_back(write_mu_[s]);
  }
  return locks;
}

Status Table::Push(std::span<const uint64_t> rows, const float* grads, const WriteLog* log) {
  storage::RowImageSink* sink = log ? log->sink : nullptr;
  // Fast path: the whole batch in one local shard needs no regrouping or copying (the shard
  // validates the whole batch before applying any row).
  if (storage::Shard* shard = SingleLocalShard(rows)) {
    storage::ApplyScratch scratch;
    if (log == nullptr) return shard->ApplyGradients(rows, grads, &scratch);
    std::lock_guard<std::mutex> lock(write_mu_[map_.ShardOf(rows[0])]);
    ENGRAM_RETURN_IF_ERROR(shard->ApplyGradients(rows, grads, &scratch, sink));
    return log->logged();
  }
  std::vector<std::vector<uint32_t>> by_shard;
  ENGRAM_RETURN_IF_ERROR(Route(rows, &by_shard));
  const uint32_t dim = schema_.dim;
  for (size_t i = 0; i < rows.size() * dim; ++i) {
    if (!std::isfinite(grads[i])) {
      return Status::InvalidArgument("push: gradient " + std::to_string(i % dim) + " of row " +
                                     std::to_string(rows[i / dim]) + " (index " + std::to_string(i / dim) +
                                     ") is not finite; nothing was applied");
    }
  }
  std::vector<uint64_t> ids;
  std::vector<float> g;
  storage::ApplyScratch scratch;
  std::vector<std::unique_lock<std::mutex>> locks;
  if (log != nullptr) locks = LockShards(by_shard);
  for (uint32_t s = 0; s < by_shard.size(); ++s) {
    const auto& idx = by_shard[s];
    if (idx.empty()) continue;
    ids.resize(idx.size());
    g.resize(idx.size() * dim);
    for (size_t k = 0; k < idx.size(); ++k) {
      ids[k] = rows[idx[k]];
      std::memcpy(g.data() + k * dim, grads + size_t{idx[k]} * dim, sizeof(float) * dim);
    }
    ENGRAM_RETURN_IF_ERROR(shards_[s]->ApplyGradients(ids, g.data(), &scratch, sink));
  }
  return log != nullptr ? log->logged() : Status::OK();
}

Status Table::Put(std::span<const uint64_t> rows, const uint8_t* values, const WriteLog* log) {
  std::vector<std::vector<uint32_t>> by_shard;
  ENGRAM_RETURN_IF_ERROR(Route(rows, &by_shard));
  const size_t vb = schema_.value_bytes();
  std::vector<uint64_t> ids;
  std::vector<uint8_t> v;
  std::vector<std::unique_lock<std::mutex>> locks;
  if (log != nullptr) locks = LockShards(by_shard);
  for (uint32_t s = 0; s < by_shard.size(); ++s) {
    const auto& idx = by_shard[s];
    if (idx.empty()) continue;
    ids.resize(idx.size());
    v.resize(idx.size() * vb);
    for (size_t k = 0; k < idx.size(); ++k) {
      ids[k] = rows[idx[k]];
      std::memcpy(v.data() + k * vb, values + size_t{idx[k]} * vb, vb);
    }
    ENGRAM_RETURN_IF_ERROR(shards_[s]->Put(ids, v.data(), log ? log->sink : nullptr));
  }
  return log != nullptr ? log->logged() : Status::OK();
}

Status Table::Rewrite(uint64_t row, const uint8_t* value, const uint8_t* state, storage::RowImageSink* sink) {
  if (row >= schema_.num_rows) return Status::OutOfRange("row " + std::to_string(row) + " is outside the table");
  const uint32_t s = map_.ShardOf(row);
  if (!shards_[s]) return Status::OK();
  return shards_[s]->Rewrite(row, value, state, sink);
}

Status Table::ReplayGradient(uint64_t row, uint64_t version, const float* grad) {
  if (row >= schema_.num_rows) return Status::OutOfRange("logged row " + std::to_string(row) + " is outside the table");
  const uint32_t s = map_.ShardOf(row);
  if (!shards_[s]) return Status::OK();
  return shards_[s]->ReplayGradient(row, version, grad);
}

Status Table::Restore(uint64_t row, uint64_t version, const uint8_t* value, const uint8_t* state) {
  if (row >= schema_.num_rows) return Status::OutOfRange("logged row " + std::to_string(row) + " is outside the table");
  const uint32_t s = map_.ShardOf(row);
  if (!shards_[s]) return Status::OK();
  return shards_[s]->Restore(row, version, value, state);
}

StatusOr<std::shared_ptr<Table>> TableRegistry::CreateTable(const TableSchema& schema, uint32_t num_shards) {
  ENGRAM_RETURN_IF_ERROR(schema.Validate());
  const uint32_t nodes[] = {node_id_};
  ENGRAM_ASSIGN_OR_RETURN(auto map, cluster::ShardMap::Balanced(schema.num_rows, num_shards, nodes, 1));
  return CreateTable(schema, std::move(map), node_id_);
}

StatusOr<std::shared_ptr<Table>> TableRegistry::CreateTable(const TableSchema& schema, cluster::ShardMap map,
                                                            uint32_t node_id, uint64_t incarnation) {
  std::lock_guard<std::mutex> lock(mu_);
  if (tables_.contains(schema.name)) return Status::AlreadyExists("table '" + schema.name + "' already exists");
  ENGRAM_ASSIGN_OR_RETURN(auto table, Table::Create(schema, std::move(map), node_id, options_, incarnation, cold_dir_));
  tables_[schema.name] = table;
  return table;
}

uint64_t TableRegistry::TouchedBytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  uint64_t total = 0;
  for (const auto& [name, t] : tables_) {
    const TableStats s = t->stats();
    total += s.touched_rows * s.bytes_per_row;
  }
  return total;
}

Status TableRegistry::DropTable(const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = tables_.find(name);
  if (it == tables_.end()) return Status::NotFound("no table named '" + name + "'");
  it->second->MarkDropped();
  tables_.erase(it);
  return Status::OK();
}

void TableRegistry::SetColdDir(std::string dir) {
  std::lock_guard<std::mutex> lock(mu_);
  cold_dir_ = std::move(dir);
}

StatusOr<std::shared_ptr<Table>> TableRegistry::Get(const std::string& name) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = tables_.find(name);
  if (it == tables_.end()) return Status::NotFound("no table named '" + name + "'");
  return it->second;
}

std::vector<std::shared_ptr<Table>> TableRegistry::Tables() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::shared_ptr<Table>> out;
  for (const auto& [name, t] : tables_) out.push_back(t);
  return out;
}

std::vector<std::string> TableRegistry::List() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> names;
  for (const auto& [name, t] : tables_) names.push_back(name);
  return names;
}

}  // namespace engram::ps
