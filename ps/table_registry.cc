// Table routing and the registry of tables.
#include "ps/table_registry.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>

#include "engram/mix.h"
#include "storage/optimizer.h"
#include "storage/row_cache.h"

namespace engram::ps {
namespace {

// Appends what one write did to one shard, as one block of a kReplicate payload
// (include/engram/wire.h), to `payload`, and passes every row on to the log's sink.
class ReplicaRecord final : public storage::RowImageSink {
 public:
  ReplicaRecord(std::vector<uint8_t>* payload, uint32_t shard, uint8_t kind, uint32_t dim, size_t vb, size_t sb,
                storage::RowImageSink* next)
      : payload_(payload), w_(payload), dim_(dim), vb_(vb), sb_(sb), next_(next) {
    w_.Put<uint32_t>(shard);
    w_.Put<uint8_t>(kind);
    count_at_ = payload_->size();
    w_.Put<uint32_t>(0);
  }
  ~ReplicaRecord() override { std::memcpy(payload_->data() + count_at_, &n_, 4); }
  void Add(uint64_t row, uint64_t version, const uint8_t* value, const uint8_t* state) override {
    wire::PutRowEntry(w_, row, version, value, vb_, state, sb_);
    ++n_;
    if (next_) next_->Add(row, version, value, state);
  }
  void AddGradient(uint64_t row, uint64_t version, const float* grad) override {
    wire::PutRowEntry(w_, row, version, grad, size_t{dim_} * sizeof(float));
    ++n_;
    if (next_) next_->AddGradient(row, version, grad);
  }

 private:
  std::vector<uint8_t>* payload_;
  wire::Writer w_;
  size_t count_at_ = 0;
  uint32_t n_ = 0;
  uint32_t dim_;
  size_t vb_, sb_;
  storage::RowImageSink* next_;
};

constexpr uint8_t kReplicaGradients = 1, kReplicaImages = 2;

}  // namespace

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
    ENGRAM_ASSIGN_OR_RETURN(cold, OpenColdStore(schema, cold_dir, incarnation));
    so.cold = cold.get();
  }
  std::vector<std::shared_ptr<storage::Shard>> shards(map.num_shards()), replicas(map.num_shards());
  for (uint32_t i = 0; i < map.num_shards(); ++i) {
    const cluster::RowRange r = map.Range(i);
    if (map.Owner(i) == node_id) {
      ENGRAM_ASSIGN_OR_RETURN(shards[i], storage::Shard::Create(schema, r.first, r.count, so));
    } else if (map.Backup(i) == node_id) {  // Replicas live in DRAM (a cold tier is per table's own shards).
      storage::ShardOptions ro = options;
      ENGRAM_ASSIGN_OR_RETURN(replicas[i], storage::Shard::Create(schema, r.first, r.count, ro));
    }
  }
  return std::shared_ptr<Table>(new Table(schema, std::move(map), node_id, so, cold_dir, std::move(cold),
                                          std::move(shards), std::move(replicas), incarnation));
}

StatusOr<std::unique_ptr<storage::ColdStore>> Table::OpenColdStore(const TableSchema& schema, const std::string& cold_dir,
                                                                   uint64_t incarnation) {
  // A fresh directory per table object: a dropped table's store may still be closing.
  std::random_device rd;
  const std::string dir = cold_dir + "/" + schema.name + "." + std::to_string(incarnation) + "." +
                          std::to_string((uint64_t{rd()} << 32) | rd());
  const size_t state_bytes = IsTrainable(schema.dtype) ? storage::OptimizerStateBytes(schema.optimizer, schema.dim) : 0;
  return storage::ColdStore::Open(dir, schema.value_bytes(), state_bytes, {});
}

Table::Table(TableSchema schema, cluster::ShardMap map, uint32_t node_id, storage::ShardOptions options,
             std::string cold_dir, std::unique_ptr<storage::ColdStore> cold,
             std::vector<std::shared_ptr<storage::Shard>> shards, std::vector<std::shared_ptr<storage::Shard>> replicas,
             uint64_t incarnation)
    : schema_(std::move(schema)), node_id_(node_id), num_shards_(map.num_shards()), div_(map.rows_per_shard()), shard_options_(options),
      cold_dir_(std::move(cold_dir)), cold_(std::move(cold)), map_(std::move(map)), shards_(std::move(shards)),
      incoming_(num_shards_), replicas_(std::move(replicas)),
      epoch_(map_.epoch()), write_mu_(new std::mutex[num_shards_]), frozen_(new std::atomic<bool>[num_shards_]),
      tracking_(num_shards_, false), out_op_(num_shards_, 0), in_op_(num_shards_, 0), in_sealed_(num_shards_, false),
      out_seen_(new std::atomic<int64_t>[num_shards_]), in_seen_(new std::atomic<int64_t>[num_shards_]),
      dirty_(num_shards_), frozen_rows_(num_shards_), incarnation_(incarnation) {
  for (uint32_t i = 0; i < num_shards_; ++i) {
    frozen_[i].store(false);
    out_seen_[i].store(0);
    in_seen_[i].store(0);
  }
  replicated_.store(!map_.backups().empty());
}

cluster::ShardMap Table::shard_map() const {
  std::shared_lock<WriterPreferringSharedMutex> lock(map_mu_);
  return map_;
}

std::shared_ptr<const storage::Shard> Table::shard(uint32_t index) const {
  std::shared_lock<WriterPreferringSharedMutex> lock(map_mu_);
  return index < shards_.size() ? shards_[index] : nullptr;
}

std::vector<std::shared_ptr<const storage::Shard>> Table::CheckpointShards() const {
  std::shared_lock<WriterPreferringSharedMutex> lock(map_mu_);
  std::vector<std::shared_ptr<const storage::Shard>> out;
  for (uint32_t i = 0; i < num_shards_; ++i) {
    if (shards_[i]) out.push_back(shards_[i]);
    if (incoming_[i]) out.push_back(incoming_[i]);
    if (replicas_[i]) out.push_back(replicas_[i]);
  }
  return out;
}

Status Table::CheckEpoch(uint64_t epoch) const {
  if (epoch == 0 || epoch == map_.epoch()) return Status::OK();
  return Status::StaleShardMap(map_.epoch(), "table '" + schema_.name + "' is at shard-map epoch " +
                                                 std::to_string(map_.epoch()) + ", request used " + std::to_string(epoch));
}

void Table::MarkDropped() {
  std::unique_lock<WriterPreferringSharedMutex> lock(map_mu_);
  dropped_ = true;
  if (cold_) cold_->RemoveOnClose();
}

TableStats Table::stats() const {
  TableStats s;
  std::shared_lock<WriterPreferringSharedMutex> lock(map_mu_);
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

Status Table::Route(std::span<const uint64_t> rows, std::vector<std::vector<uint32_t>>* by_shard, bool any_copy) const {
  by_shard->assign(map_.num_shards(), {});
  for (size_t i = 0; i < rows.size(); ++i) {
    if (rows[i] >= schema_.num_rows) {
      return Status::OutOfRange("row " + std::to_string(rows[i]) + " (index " + std::to_string(i) +
                                ") is outside table '" + schema_.name + "' of " + std::to_string(schema_.num_rows) +
                                " rows");
    }
    const uint32_t s = map_.ShardOf(rows[i]);
    if (any_copy && ReadCopy(s, true) == nullptr) {
      return Status::Unavailable("node " + std::to_string(node_id_) + " holds no copy of shard " + std::to_string(s) +
                                 " of '" + schema_.name + "'; retry");
    }
    if (!any_copy && !shards_[s]) {
      return Status::FailedPrecondition("row " + std::to_string(rows[i]) + " belongs to shard " + std::to_string(s) +
                                        ", which this node does not own");
    }
    (*by_shard)[s].push_back(static_cast<uint32_t>(i));
  }
  return Status::OK();
}

Status Table::Pull(std::span<const uint64_t> rows, uint8_t* out, uint64_t epoch, bool any_copy, bool* would_block) const {
  std::shared_lock<WriterPreferringSharedMutex> map_lock(map_mu_, std::defer_lock);
  if (would_block == nullptr) {
    map_lock.lock();
  } else if (!map_lock.try_lock()) {
    *would_block = true;
    return Status::Unavailable("table '" + schema_.name + "' is changing its map");
  }
  ENGRAM_RETURN_IF_ERROR(CheckEpoch(epoch));
  const size_t vb = schema_.value_bytes();
  // Fast path: the whole batch in one local shard needs no regrouping (common with one shard
  // per node, and for small decode batches).
  if (const storage::Shard* shard = SingleLocalShard(rows)) return shard->Gather(rows, out);
  std::vector<std::vector<uint32_t>> by_shard;
  ENGRAM_RETURN_IF_ERROR(Route(rows, &by_shard, any_copy));
  std::vector<uint64_t> ids;
  std::vector<uint8_t> buf;
  for (uint32_t s = 0; s < by_shard.size(); ++s) {
    const auto& idx = by_shard[s];
    if (idx.empty()) continue;
    ids.resize(idx.size());
    for (size_t k = 0; k < idx.size(); ++k) ids[k] = rows[idx[k]];
    buf.resize(idx.size() * vb);
    ENGRAM_RETURN_IF_ERROR(ReadCopy(s, any_copy)->Gather(ids, buf.data()));
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

Status Table::CheckFrozenAndTrack(std::span<const uint64_t> rows, const std::vector<std::vector<uint32_t>>& by_shard) {
  if (moves_ == 0) return Status::OK();
  for (uint32_t s = 0; s < by_shard.size(); ++s) {
    if (!by_shard[s].empty() && frozen_[s].load(std::memory_order_acquire)) {
      return Status::Unavailable("shard " + std::to_string(s) + " of table '" + schema_.name +
                                 "' is moving to another node; retry");
    }
  }
  std::lock_guard<std::mutex> lock(dirty_mu_);
  for (uint32_t s = 0; s < by_shard.size(); ++s) {
    if (!tracking_[s]) continue;
    for (uint32_t i : by_shard[s]) dirty_[s].insert(rows[i]);
  }
  return Status::OK();
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
  for (uint32_t s = 0; s < num_shards_; ++s) locks.emplace_back(write_mu_[s]);
  return locks;
}

Status Table::Push(std::span<const uint64_t> rows, const float* grads, const WriteLog* log, uint64_t epoch) {
  std::shared_lock<WriterPreferringSharedMutex> map_lock(map_mu_);
  ENGRAM_RETURN_IF_ERROR(CheckEpoch(epoch));
  storage::RowImageSink* sink = log ? log->sink : nullptr;
  // Fast path: the whole batch in one local shard needs no regrouping or copying (the shard
  // validates the whole batch before applying any row). Not while moves run: those need the
  // shard's write lock and its frozen check.
  const bool replicated = log != nullptr && log->replicate && !map_.backups().empty();
  if (storage::Shard* shard = moves_ == 0 && !replicated ? SingleLocalShard(rows) : nullptr) {
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
  ReplicaPayloads replicas;
  std::vector<std::unique_lock<std::mutex>> locks;
  if (log != nullptr || moves_ > 0) locks = LockShards(by_shard);
  ENGRAM_RETURN_IF_ERROR(CheckFrozenAndTrack(rows, by_shard));
  for (uint32_t s = 0; s < by_shard.size(); ++s) {
    const auto& idx = by_shard[s];
    if (idx.empty()) continue;
    ids.resize(idx.size());
    g.resize(idx.size() * dim);
    for (size_t k = 0; k < idx.size(); ++k) {
      ids[k] = rows[idx[k]];
      std::memcpy(g.data() + k * dim, grads + size_t{idx[k]} * dim, sizeof(float) * dim);
    }
    if (replicated && map_.Backup(s) != cluster::kNoNode) {
      ReplicaRecord rec(replicas.Block(*this, *log, map_.Backup(s), s), s, kReplicaGradients, dim, 0, 0, sink);
      ENGRAM_RETURN_IF_ERROR(shards_[s]->ApplyGradients(ids, g.data(), &scratch, &rec));
    } else {
      ENGRAM_RETURN_IF_ERROR(shards_[s]->ApplyGradients(ids, g.data(), &scratch, sink));
    }
  }
  if (log == nullptr) return Status::OK();
  ENGRAM_RETURN_IF_ERROR(log->logged());
  return Replicate(*log, replicas);
}

std::vector<uint8_t>* Table::ReplicaPayloads::Block(const Table& t, const WriteLog& log, uint32_t node,
                                                    uint32_t shard) {
  Payload& p = by_node[node];
  if (p.bytes.empty()) {  // Header: table, client, seq, block count (patched in Replicate).
    wire::Writer w(&p.bytes);
    w.PutString(t.schema_.name);
    w.Put<uint64_t>(log.client);
    w.Put<uint64_t>(log.seq);
    p.count_at = p.bytes.size();
    w.Put<uint32_t>(0);
  }
  p.shards.push_back(shard);
  return &p.bytes;
}

Status Table::Replicate(const WriteLog& log, ReplicaPayloads& payloads) const {
  // One message per backup node with every shard it backs up: a backup applies a write's rows
  // all or none, so after a failover its record of the push id is exact for the rows it holds.
  for (auto& [node, p] : payloads.by_node) {
    const uint32_t blocks = static_cast<uint32_t>(p.shards.size());
    std::memcpy(p.bytes.data() + p.count_at, &blocks, 4);
    ENGRAM_RETURN_IF_ERROR(log.replicate(p.shards, node, std::move(p.bytes)));
  }
  return Status::OK();
}

Status Table::Put(std::span<const uint64_t> rows, const uint8_t* values, const WriteLog* log, uint64_t epoch) {
  std::shared_lock<WriterPreferringSharedMutex> map_lock(map_mu_);
  ENGRAM_RETURN_IF_ERROR(CheckEpoch(epoch));
  std::vector<std::vector<uint32_t>> by_shard;
  ENGRAM_RETURN_IF_ERROR(Route(rows, &by_shard));
  const size_t vb = schema_.value_bytes();
  std::vector<uint64_t> ids;
  std::vector<uint8_t> v;
  ReplicaPayloads replicas;
  std::vector<std::unique_lock<std::mutex>> locks;
  if (log != nullptr || moves_ > 0) locks = LockShards(by_shard);
  ENGRAM_RETURN_IF_ERROR(CheckFrozenAndTrack(rows, by_shard));
  for (uint32_t s = 0; s < by_shard.size(); ++s) {
    const auto& idx = by_shard[s];
    if (idx.empty()) continue;
    ids.resize(idx.size());
    v.resize(idx.size() * vb);
    for (size_t k = 0; k < idx.size(); ++k) {
      ids[k] = rows[idx[k]];
      std::memcpy(v.data() + k * vb, values + size_t{idx[k]} * vb, vb);
    }
    if (log != nullptr && log->replicate && map_.Backup(s) != cluster::kNoNode) {
      ReplicaRecord rec(replicas.Block(*this, *log, map_.Backup(s), s), s, kReplicaImages, schema_.dim, vb,
                        shards_[s]->state_bytes(), log->sink);
      ENGRAM_RETURN_IF_ERROR(shards_[s]->Put(ids, v.data(), &rec));
    } else {
      ENGRAM_RETURN_IF_ERROR(shards_[s]->Put(ids, v.data(), log ? log->sink : nullptr));
    }
  }
  if (log == nullptr) return Status::OK();
  ENGRAM_RETURN_IF_ERROR(log->logged());
  return Replicate(*log, replicas);
}

Status Table::Rewrite(uint64_t row, const uint8_t* value, const uint8_t* state, storage::RowImageSink* sink) {
  // No map lock: the caller's write locks exclude AdoptMap (which takes them after the map
  // lock), and taking the map lock here would invert that order.
  if (row >= schema_.num_rows) return Status::OutOfRange("row " + std::to_string(row) + " is outside the table");
  const uint32_t s = map_.ShardOf(row);
  if (!shards_[s]) return Status::OK();
  return shards_[s]->Rewrite(row, value, state, sink);
}

Status Table::ReplayGradient(uint64_t row, uint64_t version, const float* grad) {
  std::shared_lock<WriterPreferringSharedMutex> map_lock(map_mu_);
  if (row >= schema_.num_rows) return Status::OutOfRange("logged row " + std::to_string(row) + " is outside the table");
  storage::Shard* h = Holder(row);
  return h ? h->ReplayGradient(row, version, grad) : Status::OK();
}

Status Table::Restore(uint64_t row, uint64_t version, const uint8_t* value, const uint8_t* state) {
  std::shared_lock<WriterPreferringSharedMutex> map_lock(map_mu_);
  if (row >= schema_.num_rows) return Status::OutOfRange("logged row " + std::to_string(row) + " is outside the table");
  storage::Shard* h = Holder(row);
  return h ? h->Restore(row, version, value, state) : Status::OK();
}

storage::Shard* Table::Holder(uint64_t row) const {
  const uint32_t s = map_.ShardOf(row);
  if (shards_[s]) return shards_[s].get();
  return replicas_[s].get();
}

std::vector<uint32_t> Table::ShardsOf(std::span<const uint64_t> rows) const {
  // Every push asks. Clients send sorted rows, so the shards come in order: one pass, and a sort
  // only for rows in another order.
  std::vector<uint32_t> out;
  for (uint64_t row : rows) {
    if (row >= schema_.num_rows) continue;
    const uint32_t s = ShardOf(row);
    if (out.empty() || out.back() != s) out.push_back(s);
  }
  if (!std::is_sorted(out.begin(), out.end())) {
    std::sort(out.begin(), out.end());
    out.erase(std::unique(out.begin(), out.end()), out.end());
  }
  return out;
}

Status Table::ApplyReplica(wire::Reader& r, storage::RowImageSink* sink, std::vector<uint32_t>* shards,
                           const std::function<Status()>& applied) {
  std::shared_lock<WriterPreferringSharedMutex> map_lock(map_mu_);
  uint32_t blocks = 0;
  ENGRAM_RETURN_IF_ERROR(r.Get(&blocks));
  if (blocks == 0 || blocks > num_shards_) return Status::InvalidArgument("malformed frame: replica block count");
  struct Entry {
    uint64_t row, version;
    const uint8_t *a, *b;
  };
  struct Block {
    uint32_t shard;
    uint8_t kind;
    std::vector<Entry> rows;
  };
  std::vector<Block> parsed(blocks);
  const size_t vb = schema_.value_bytes(), gb = size_t{schema_.dim} * sizeof(float);
  std::vector<std::vector<uint32_t>> by_shard(num_shards_);  // For LockShards: shards with rows.
  for (Block& blk : parsed) {  // Everything is checked before any row changes.
    uint32_t n = 0;
    ENGRAM_RETURN_IF_ERROR(r.Get(&blk.shard));
    ENGRAM_RETURN_IF_ERROR(r.Get(&blk.kind));
    ENGRAM_RETURN_IF_ERROR(r.Get(&n));
    if (blk.shard >= num_shards_ || !replicas_[blk.shard]) {
      return Status::FailedPrecondition("this node holds no replica of shard " + std::to_string(blk.shard) + " of '" +
                                        schema_.name + "'");
    }
    if (!by_shard[blk.shard].empty()) return Status::InvalidArgument("a replica message names a shard twice");
    by_shard[blk.shard].push_back(0);
    if (blk.kind != kReplicaGradients && blk.kind != kReplicaImages) return Status::InvalidArgument("unknown replica record kind");
    if (n > r.remaining() / 16) return Status::InvalidArgument("malformed frame: replica row count");
    const size_t sb = replicas_[blk.shard]->state_bytes();
    blk.rows.resize(n);
    for (Entry& e : blk.rows) {
      e.b = nullptr;
      const bool images = blk.kind == kReplicaImages;
      ENGRAM_RETURN_IF_ERROR(wire::GetRowEntry(r, &e.row, &e.version, &e.a, images ? vb : gb, &e.b, images ? sb : 0));
      if (e.row >= schema_.num_rows || map_.ShardOf(e.row) != blk.shard) {
        return Status::InvalidArgument("replica row outside its shard");
      }
    }
  }
  if (r.remaining() != 0) return Status::InvalidArgument("malformed frame: trailing bytes after replica rows");
  if (shards != nullptr) {
    shards->clear();
    for (const Block& blk : parsed) shards->push_back(blk.shard);
    std::sort(shards->begin(), shards->end());
  }
  auto locks = LockShards(by_shard);  // The same order as the primary's writes, shard by shard.
  for (const Block& blk : parsed) {
    storage::Shard& rep = *replicas_[blk.shard];
    for (const Entry& e : blk.rows) {
      if (blk.kind == kReplicaGradients) {
        ENGRAM_RETURN_IF_ERROR(rep.ReplayGradient(e.row, e.version, reinterpret_cast<const float*>(e.a)));
        if (sink) sink->AddGradient(e.row, e.version, reinterpret_cast<const float*>(e.a));
      } else {
        ENGRAM_RETURN_IF_ERROR(rep.Restore(e.row, e.version, e.a, e.b));
        if (sink) sink->Add(e.row, e.version, e.a, e.b);
      }
    }
  }
  return applied ? applied() : Status::OK();
}

bool Table::Busy(uint64_t current, uint64_t op, const std::atomic<int64_t>& seen) const {
  if (current == 0 || current == op) return false;
  const int64_t idle_ms = SteadyNowMs() - seen.load(std::memory_order_relaxed);
  return idle_ms < std::chrono::duration_cast<std::chrono::milliseconds>(kMoveIdleTakeover).count();
}

Status Table::PrepareIncoming(uint32_t shard, uint64_t op) {
  std::unique_lock<WriterPreferringSharedMutex> lock(map_mu_);
  if (shard >= num_shards_) return Status::InvalidArgument("no shard " + std::to_string(shard));
  if (op == 0) return Status::InvalidArgument("a move step needs a nonzero operation id");
  if (shards_[shard]) return Status::FailedPrecondition("shard " + std::to_string(shard) + " is already on this node");
  if (dropped_) return Status::NotFound("table '" + schema_.name + "' was dropped");
  if (incoming_[shard] && Busy(in_op_[shard], op, in_seen_[shard])) {
    return Status::Unavailable("busy: another operation is copying shard " + std::to_string(shard) + " of '" +
                                      schema_.name + "' to this node; retry when it ends");
  }
  in_seen_[shard].store(SteadyNowMs(), std::memory_order_relaxed);
  if (incoming_[shard] && in_op_[shard] == op) return Status::OK();  // A retry of this step.
  in_op_[shard] = op;
  in_sealed_[shard] = false;
  const cluster::RowRange r = map_.Range(shard);
  storage::ShardOptions so = shard_options_;
  if (schema_.dram_bytes > 0) {
    // The table's DRAM budget covers the rows it holds already; past it, this shard gets a row
    // cache (a share of the budget) over the cold tier, opened now if the table had none.
    uint64_t held_rows = 0, held = 0;
    for (uint32_t s = 0; s < num_shards_; ++s) {
      if (shards_[s] || incoming_[s]) held_rows += map_.Range(s).count, ++held;
    }
    const size_t state_bytes = IsTrainable(schema_.dtype) ? storage::OptimizerStateBytes(schema_.optimizer, schema_.dim) : 0;
    const uint64_t budget = schema_.dram_bytes / storage::RowCache::BytesPerSlot(schema_.value_bytes(), state_bytes);
    if (budget < held_rows + r.count) {
      if (!cold_) {
        if (cold_dir_.empty()) {
          return Status::FailedPrecondition("table '" + schema_.name + "' needs a cold tier on this node for shard " +
                                            std::to_string(shard) + ", but the node has no --data_dir");
        }
        ENGRAM_ASSIGN_OR_RETURN(cold_, OpenColdStore(schema_, cold_dir_, incarnation_));
      }
      so.cold = cold_.get();
      so.cache_rows = std::max<uint64_t>(so.cache.ways, budget / (held + 1));
    }
  }
  ENGRAM_ASSIGN_OR_RETURN(incoming_[shard], storage::Shard::Create(schema_, r.first, r.count, so));
  return Status::OK();
}

Status Table::WriteIncoming(uint32_t shard, const std::vector<RowImage>& images, storage::RowImageSink* sink) {
  std::shared_lock<WriterPreferringSharedMutex> lock(map_mu_);
  if (shard >= num_shards_ || !incoming_[shard]) {
    return Status::FailedPrecondition("shard " + std::to_string(shard) + " is not being moved to this node");
  }
  storage::Shard& to = *incoming_[shard];
  in_seen_[shard].store(SteadyNowMs(), std::memory_order_relaxed);
  std::lock_guard<std::mutex> w(write_mu_[shard]);
  for (const RowImage& im : images) {
    if (im.value.size() != schema_.value_bytes() || im.state.size() != to.state_bytes()) {
      return Status::InvalidArgument("row image of the wrong size for table '" + schema_.name + "'");
    }
    ENGRAM_RETURN_IF_ERROR(to.Restore(im.row, im.version, im.value.data(), im.state.empty() ? nullptr : im.state.data()));
    if (sink) sink->Add(im.row, im.version, im.value.data(), im.state.empty() ? nullptr : im.state.data());
  }
  return Status::OK();
}

Status Table::SealIncoming(uint32_t shard, uint64_t op) {
  std::unique_lock<WriterPreferringSharedMutex> lock(map_mu_);
  if (shard >= num_shards_ || !incoming_[shard] || in_op_[shard] != op) {
    return Status::FailedPrecondition("shard " + std::to_string(shard) + " is not being moved to this node by this operation");
  }
  in_seen_[shard].store(SteadyNowMs(), std::memory_order_relaxed);
  in_sealed_[shard] = true;
  return Status::OK();
}

bool Table::CompleteCopy(uint32_t s) const { return incoming_[s] && in_sealed_[s]; }

void Table::EndIncoming(uint32_t s) {
  incoming_[s].reset();
  in_op_[s] = 0;
  in_sealed_[s] = false;
}

Status Table::BeginRestore() {
  std::unique_lock<WriterPreferringSharedMutex> lock(map_mu_);
  if (moves_.load() > 0) {
    return Status::FailedPrecondition("a shard of table '" + schema_.name + "' is being moved or copied; restore after it");
  }
  if (restoring_.exchange(true)) return Status::FailedPrecondition("table '" + schema_.name + "' is being restored already");
  return Status::OK();
}

Status Table::TrackOutgoing(uint32_t shard, uint64_t op) {
  std::unique_lock<WriterPreferringSharedMutex> lock(map_mu_);  // Waits out every write in flight.
  if (shard >= num_shards_ || !shards_[shard]) {
    return Status::FailedPrecondition("shard " + std::to_string(shard) + " is not on this node");
  }
  if (restoring_.load()) {
    return Status::Unavailable("busy: table '" + schema_.name + "' is being restored on this node; retry when it ends");
  }
  if (op == 0) return Status::InvalidArgument("a move step needs a nonzero operation id");
  if (tracking_[shard] && Busy(out_op_[shard], op, out_seen_[shard])) {
    return Status::Unavailable("busy: another operation is moving or copying shard " + std::to_string(shard) +
                                      " of '" + schema_.name + "' from this node; retry when it ends");
  }
  out_seen_[shard].store(SteadyNowMs(), std::memory_order_relaxed);
  if (tracking_[shard] && out_op_[shard] == op) return Status::OK();  // A retry of this step.
  // A new operation, or one taking over from a driver that went idle (its state restarts: the
  // shard is unfrozen and tracked afresh, and the new driver copies everything again).
  std::lock_guard<std::mutex> w(write_mu_[shard]);  // Waits out a restore in progress.
  if (!tracking_[shard]) ++moves_;
  tracking_[shard] = true;
  out_op_[shard] = op;
  frozen_[shard].store(false, std::memory_order_release);
  std::lock_guard<std::mutex> d(dirty_mu_);
  dirty_[shard].clear();
  frozen_rows_[shard].clear();
  return Status::OK();
}

StatusOr<uint64_t> Table::FreezeOutgoing(uint32_t shard, uint64_t op) {
  std::shared_lock<WriterPreferringSharedMutex> lock(map_mu_);
  if (shard >= num_shards_ || !tracking_[shard] || out_op_[shard] != op) {
    return Status::FailedPrecondition("shard " + std::to_string(shard) + " is not being moved from this node by this operation");
  }
  out_seen_[shard].store(SteadyNowMs(), std::memory_order_relaxed);
  frozen_[shard].store(true, std::memory_order_release);
  { std::lock_guard<std::mutex> w(write_mu_[shard]); }  // Writers check frozen under this lock.
  std::lock_guard<std::mutex> d(dirty_mu_);
  frozen_rows_[shard].assign(dirty_[shard].begin(), dirty_[shard].end());
  std::sort(frozen_rows_[shard].begin(), frozen_rows_[shard].end());
  return static_cast<uint64_t>(frozen_rows_[shard].size());
}

StatusOr<uint64_t> Table::ReadOutgoing(uint32_t shard, uint64_t cursor, uint32_t max_rows, bool dirty,
                                       std::vector<RowImage>* out) const {
  std::shared_lock<WriterPreferringSharedMutex> lock(map_mu_);
  if (shard >= num_shards_ || !shards_[shard]) {
    return Status::FailedPrecondition("shard " + std::to_string(shard) + " is not on this node");
  }
  const storage::Shard& from = *shards_[shard];
  auto add = [&](uint64_t row, uint64_t version, const uint8_t* value, const uint8_t* state) {
    RowImage im;
    im.row = row;
    im.version = version;
    im.value.assign(value, value + schema_.value_bytes());
    if (state != nullptr) im.state.assign(state, state + from.state_bytes());
    out->push_back(std::move(im));
  };
  if (!dirty) {
    const uint64_t first = from.first_row() + std::min(cursor, from.num_rows());
    const uint64_t n = std::min<uint64_t>(max_rows, from.first_row() + from.num_rows() - first);
    ENGRAM_RETURN_IF_ERROR(from.ForEachTouched(add, first, n));
    const uint64_t next = first + n - from.first_row();
    return next >= from.num_rows() ? UINT64_MAX : next;
  }
  std::vector<uint64_t> rows;
  {
    std::lock_guard<std::mutex> d(dirty_mu_);
    const auto& all = frozen_rows_[shard];
    for (uint64_t i = cursor; i < all.size() && rows.size() < max_rows; ++i) rows.push_back(all[i]);
  }
  // Each dirty row read alone (ranges of one row): the list is short, written while copying.
  for (uint64_t row : rows) ENGRAM_RETURN_IF_ERROR(from.ForEachTouched(add, row, 1));
  const uint64_t next = cursor + rows.size();
  std::lock_guard<std::mutex> d(dirty_mu_);
  return next >= frozen_rows_[shard].size() ? UINT64_MAX : next;
}

Status Table::AdoptMap(cluster::ShardMap map) {
  std::unique_lock<WriterPreferringSharedMutex> lock(map_mu_);
  if (map.num_shards() != num_shards_ || map.num_rows() != schema_.num_rows) {
    return Status::InvalidArgument("the new map of table '" + schema_.name + "' has another shape");
  }
  if (map.epoch() == map_.epoch() && map.owners() == map_.owners()) return Status::OK();  // Already adopted.
  if (map.epoch() < map_.epoch()) return Status::OK();  // Superseded here already.
  if (map.epoch() == map_.epoch()) {
    return Status::FailedPrecondition("table '" + schema_.name + "' is at epoch " + std::to_string(map_.epoch()) +
                                      "; refusing map epoch " + std::to_string(map.epoch()));
  }
  for (uint32_t s = 0; s < num_shards_; ++s) {  // Checks first: nothing changes on failure.
    const bool complete_copy = CompleteCopy(s);
    if (map.Owner(s) == node_id_ && !shards_[s] && !complete_copy && !replicas_[s]) {
      return Status::FailedPrecondition("map epoch " + std::to_string(map.epoch()) + " of table '" + schema_.name +
                                        "' gives this node shard " + std::to_string(s) +
                                        ", but no complete copy of it was moved here (run the move again)");
    }
    if (map.Backup(s) == node_id_ && !replicas_[s] && !complete_copy) {
      return Status::FailedPrecondition("map epoch " + std::to_string(map.epoch()) + " of table '" + schema_.name +
                                        "' makes this node shard " + std::to_string(s) +
                                        "'s backup, but no copy of it was made here");
    }
  }
  auto writes = LockWrites();  // Also excludes Rewrite (restores), which holds only these.
  for (uint32_t s = 0; s < num_shards_; ++s) {
    const bool mine = map.Owner(s) == node_id_;
    const bool complete_copy = CompleteCopy(s);
    if (mine && !shards_[s]) {
      // This node's replica promoted (its primary's lease expired), or a move onto its node
      // flipped: the replica got every write its primary acknowledged, up to a move's freeze.
      // Without a replica: a move's copy, sealed once the source froze and every row written
      // since had been copied. A copy still being made is never served (its source may have
      // failed mid-copy); it ends here, as a shard this node owns cannot be moved to it.
      shards_[s] = replicas_[s] ? std::move(replicas_[s]) : std::move(incoming_[s]);
      EndIncoming(s);
    } else if (!mine && shards_[s]) {
      shards_[s]->Retire();  // One-sided readers of the old copy now ask us, and learn the new map.
      shards_[s].reset();
    }
    // A new backup: its sealed copy. (A node that missed the record dropping it as the backup
    // keeps a replica its primary stopped forwarding to; a move's driver sends the destination
    // the current record first, which ends that replica before the copy begins.)
    if (map.Backup(s) == node_id_ && !replicas_[s] && complete_copy) {
      replicas_[s] = std::move(incoming_[s]);
      EndIncoming(s);
    }
    // An incoming copy not installed by this map stays: another operation is still making it.
    if (map.Backup(s) != node_id_) replicas_[s].reset();
    const bool new_backup = map.Backup(s) != map_.Backup(s) && map.Backup(s) != cluster::kNoNode;
    if (!mine || new_backup) {  // The flips of a move and of a new backup end their operation.
      if (tracking_[s]) --moves_;
      tracking_[s] = false;
      out_op_[s] = 0;
      frozen_[s].store(false, std::memory_order_release);
    }
  }
  map_ = std::move(map);
  epoch_.store(map_.epoch(), std::memory_order_release);
  replicated_.store(!map_.backups().empty(), std::memory_order_release);
  return Status::OK();
}

void Table::AbortMove(uint32_t shard, uint64_t op) {
  std::unique_lock<WriterPreferringSharedMutex> lock(map_mu_);
  if (shard >= num_shards_ || op == 0) return;
  if (in_op_[shard] == op) EndIncoming(shard);
  if (tracking_[shard] && out_op_[shard] == op) {
    --moves_;
    tracking_[shard] = false;
    out_op_[shard] = 0;
    frozen_[shard].store(false, std::memory_order_release);
  }
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
