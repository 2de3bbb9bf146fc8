// Durability: catalog file, log records of after-images, checkpoints, recovery.
#include "ps/durability.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "engram/wire.h"
#include "storage/crc32c.h"
#include "storage/optimizer.h"

namespace engram::ps {
namespace {

constexpr uint32_t kCatalogMagic = 0x54414345;  // "ECAT"
constexpr uint32_t kCatalogVersion = 1;
constexpr size_t kCheckpointRecordBytes = size_t{4} << 20;

Status Errno(const std::string& what) { return Status::IoError(what + ": " + std::strerror(errno)); }

Status SyncPath(const std::string& path, bool directory) {
  const int fd = ::open(path.c_str(), directory ? (O_RDONLY | O_DIRECTORY) : O_RDONLY);
  if (fd < 0) return Errno("open " + path);
  const int r = ::fsync(fd);
  ::close(fd);
  return r == 0 ? Status::OK() : Errno("fsync " + path);
}

// Writes `bytes` to `path` atomically: a temp file, fsync, rename, fsync of the directory.
Status WriteFileAtomically(const std::string& dir, const std::string& name, const std::vector<uint8_t>& bytes) {
  const std::string tmp = dir + "/" + name + ".tmp", path = dir + "/" + name;
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Errno("create " + tmp);
  size_t off = 0;
  while (off < bytes.size()) {
    const ssize_t w = ::write(fd, bytes.data() + off, bytes.size() - off);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) {
      ::close(fd);
      return Errno("write " + tmp);
    }
    off += static_cast<size_t>(w);
  }
  if (::fsync(fd) != 0) {
    ::close(fd);
    return Errno("fsync " + tmp);
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) return Errno("rename " + tmp);
  return SyncPath(dir, true);
}

// Numbers of the complete checkpoints (directories named by a number), ascending.
std::vector<uint64_t> Checkpoints(const std::string& dir) {
  std::vector<uint64_t> out;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return out;
  while (dirent* e = ::readdir(d)) {
    char* end = nullptr;
    const unsigned long long n = std::strtoull(e->d_name, &end, 10);
    if (end != e->d_name && *end == '\0' && n > 0) out.push_back(n);
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

// The header of a rows record (kPush, kPut, kCheckpointRows) after its kind byte, as
// LogRecord writes it.
struct RowsHeader {
  std::string table;
  uint64_t incarnation = 0, client = 0, seq = 0;
  uint32_t row_bytes = 0, state_bytes = 0, rows = 0;
};

Status ReadRowsHeader(wire::Reader& r, RowsHeader* h) {
  ENGRAM_RETURN_IF_ERROR(r.GetString(&h->table, 128));
  ENGRAM_RETURN_IF_ERROR(r.Get(&h->incarnation));
  ENGRAM_RETURN_IF_ERROR(r.Get(&h->client));
  ENGRAM_RETURN_IF_ERROR(r.Get(&h->seq));
  ENGRAM_RETURN_IF_ERROR(r.Get(&h->row_bytes));
  ENGRAM_RETURN_IF_ERROR(r.Get(&h->state_bytes));
  return r.Get(&h->rows);
}

// Calls fn(row, version, data, state) for each of the header's rows (state nullptr when the
// record carries none); stops at fn's first error.
template <typename Fn>
Status ForEachLoggedRow(wire::Reader& r, const RowsHeader& h, Fn&& fn) {
  for (uint32_t i = 0; i < h.rows; ++i) {
    uint64_t row = 0, version = 0;
    const uint8_t* data = nullptr;
    const uint8_t* state = nullptr;
    ENGRAM_RETURN_IF_ERROR(wire::GetRowEntry(r, &row, &version, &data, h.row_bytes, &state, h.state_bytes));
    ENGRAM_RETURN_IF_ERROR(fn(row, version, data, state));
  }
  return Status::OK();
}

}  // namespace

LogRecord::LogRecord(RecordKind kind, const Table& table, uint64_t client, uint64_t seq)
    : value_bytes_(table.schema().value_bytes()) {
  const TableSchema& schema = table.schema();
  state_bytes_ = IsTrainable(schema.dtype) ? storage::OptimizerStateBytes(schema.optimizer, schema.dim) : 0;
  if (kind == RecordKind::kPush) {
    value_bytes_ = size_t{table.schema().dim} * sizeof(float);
    state_bytes_ = 0;
  }
  wire::Writer w(&buf_);
  w.Put<uint8_t>(static_cast<uint8_t>(kind));
  w.PutString(table.schema().name);
  w.Put<uint64_t>(table.incarnation());
  w.Put<uint64_t>(client);
  w.Put<uint64_t>(seq);
  w.Put<uint32_t>(static_cast<uint32_t>(value_bytes_));
  w.Put<uint32_t>(static_cast<uint32_t>(state_bytes_));
  count_at_ = buf_.size();
  w.Put<uint32_t>(0);  // Row count, patched by bytes().
}

void LogRecord::Add(uint64_t row, uint64_t version, const uint8_t* value, const uint8_t* state) {
  wire::Writer w(&buf_);
  wire::PutRowEntry(w, row, version, value, value_bytes_, state, state_bytes_);
  ++rows_;
}

void LogRecord::AddGradient(uint64_t row, uint64_t version, const float* grad) {
  wire::Writer w(&buf_);
  wire::PutRowEntry(w, row, version, grad, value_bytes_);
  ++rows_;
}

std::span<const uint8_t> LogRecord::bytes() {
  std::memcpy(buf_.data() + count_at_, &rows_, sizeof(rows_));
  return buf_;
}

StatusOr<std::unique_ptr<Durability>> Durability::Open(const DurabilityOptions& options, TableRegistry* registry,
                                                       PushDedup* dedup, RecoveryStats* stats) {
  for (const std::string& d : {options.dir, options.dir + "/wal", options.dir + "/checkpoints"}) {
    if (::mkdir(d.c_str(), 0755) != 0 && errno != EEXIST) return Errno("create " + d);
  }
  auto dur = std::unique_ptr<Durability>(new Durability(options));
  // A checkpoint a crash interrupted is incomplete by construction: discard it.
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(options.dir + "/checkpoints", ec)) {
    if (e.path().extension() == ".tmp") std::filesystem::remove_all(e.path(), ec);
  }
  // Cold tiers are caches of what the log and checkpoints hold (storage/cold_store.h): start
  // them empty; recovery refills them.
  const std::string cold = options.dir + "/cold";
  std::filesystem::remove_all(cold, ec);
  if (ec || (::mkdir(cold.c_str(), 0755) != 0 && errno != EEXIST)) return Errno("reset " + cold);
  registry->SetColdDir(cold);
  RecoveryStats local;
  RecoveryStats& st = stats ? *stats : local;
  ENGRAM_RETURN_IF_ERROR(dur->LoadCatalog(registry, &st));
  // The newest complete checkpoint, then every log segment it does not cover.
  uint64_t first_segment = 0;
  const auto cps = Checkpoints(options.dir + "/checkpoints");
  if (!cps.empty()) {
    first_segment = cps.back();
    st.checkpoint = cps.back();
    const std::string cp = options.dir + "/checkpoints/" + std::to_string(cps.back());
    storage::WalReplayStats rs;
    ENGRAM_RETURN_IF_ERROR(storage::WriteAheadLog::Replay(cp, 0, [&](std::span<const uint8_t> p) {
      return dur->ApplyRecord(p, registry, dedup, &st, true);
    }, &rs));
    if (!rs.torn_tails.empty()) return Status::DataLoss("checkpoint " + cp + " is damaged: " + rs.torn_tails[0]);
    if (!rs.corrupt.empty()) return Status::DataLoss("checkpoint " + cp + " is damaged: " + rs.corrupt[0]);
  }
  storage::WalReplayStats rs;
  ENGRAM_RETURN_IF_ERROR(storage::WriteAheadLog::Replay(options.dir + "/wal", first_segment,
                                                        [&](std::span<const uint8_t> p) {
                                                          return dur->ApplyRecord(p, registry, dedup, &st, false);
                                                        },
                                                        &rs));
  st.torn_tails = rs.torn_tails;
  st.corrupt = rs.corrupt;
  storage::WalOptions wo;
  wo.sync = options.sync;
  wo.sync_interval_ms = options.sync_interval_ms;
  ENGRAM_ASSIGN_OR_RETURN(dur->wal_, storage::WriteAheadLog::Open(options.dir + "/wal", wo));
  return dur;
}

Status Durability::LoadCatalog(TableRegistry* registry, RecoveryStats* stats) {
  const std::string path = options_.dir + "/catalog";
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return Status::OK();  // A fresh data directory.
    return Errno("open " + path);
  }
  std::vector<uint8_t> bytes;
  uint8_t chunk[65536];
  for (;;) {
    const ssize_t r = ::read(fd, chunk, sizeof(chunk));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    bytes.insert(bytes.end(), chunk, chunk + r);
  }
  ::close(fd);
  uint32_t crc = 0;
  if (bytes.size() < 4) return Status::DataLoss(path + " is truncated");
  std::memcpy(&crc, bytes.data(), 4);
  if (storage::Crc32c(bytes.data() + 4, bytes.size() - 4) != crc) return Status::DataLoss(path + " fails its checksum");
  wire::Reader r(bytes.data() + 4, bytes.size() - 4);
  uint32_t magic = 0, version = 0, n = 0;
  uint64_t next = 0;
  ENGRAM_RETURN_IF_ERROR(r.Get(&magic));
  ENGRAM_RETURN_IF_ERROR(r.Get(&version));
  if (magic != kCatalogMagic || version != kCatalogVersion) {
    return Status::DataLoss(path + " is not an engram-ps catalog of version " + std::to_string(kCatalogVersion));
  }
  ENGRAM_RETURN_IF_ERROR(r.Get(&next));
  ENGRAM_RETURN_IF_ERROR(r.Get(&n));
  next_incarnation_ = next;
  for (uint32_t i = 0; i < n; ++i) {
    wire::TableInfo info;
    uint64_t incarnation = 0;
    ENGRAM_RETURN_IF_ERROR(wire::GetTableInfo(r, &info).WithContext(path));
    ENGRAM_RETURN_IF_ERROR(r.Get(&incarnation));
    ENGRAM_ASSIGN_OR_RETURN(auto map, cluster::ShardMap::Create(info.schema.num_rows, info.owners, info.epoch, info.backups));
    ENGRAM_RETURN_IF_ERROR(registry->CreateTable(info.schema, std::move(map), info.node_id, incarnation).status());
    stats->tables++;
  }
  return Status::OK();
}

uint64_t Durability::NextIncarnation() {
  // Persisted with the catalog: SaveCatalog runs after every create.
  return next_incarnation_.fetch_add(1);
}

Status Durability::SaveCatalog(const TableRegistry& registry) {
  std::lock_guard<std::mutex> lock(catalog_mu_);
  std::vector<uint8_t> bytes(4);
  wire::Writer w(&bytes);
  w.Put<uint32_t>(kCatalogMagic);
  w.Put<uint32_t>(kCatalogVersion);
  w.Put<uint64_t>(next_incarnation_.load());
  const auto tables = registry.Tables();
  w.Put<uint32_t>(static_cast<uint32_t>(tables.size()));
  for (const auto& t : tables) {
    wire::TableInfo info;
    info.schema = t->schema();
    const cluster::ShardMap map = t->shard_map();
    info.epoch = map.epoch();
    info.owners = map.owners();
    info.backups = map.backups();
    info.node_id = t->node_id();
    wire::PutTableInfo(w, info);
    w.Put<uint64_t>(t->incarnation());
  }
  const uint32_t crc = storage::Crc32c(bytes.data() + 4, bytes.size() - 4);
  std::memcpy(bytes.data(), &crc, 4);
  return WriteFileAtomically(options_.dir, "catalog", bytes);
}

namespace {
// A kAppliedShards record: n u32, n x (client u64, seq u64, all shards u8, k u32, k x shard u32).
std::vector<uint8_t> EncodeApplied(const std::vector<PushDedup::Applied>& applied) {
  std::vector<uint8_t> buf;
  wire::Writer w(&buf);
  w.Put<uint8_t>(static_cast<uint8_t>(RecordKind::kAppliedShards));
  w.Put<uint32_t>(static_cast<uint32_t>(applied.size()));
  for (const auto& a : applied) {
    w.Put<uint64_t>(a.client);
    w.Put<uint64_t>(a.seq);
    w.Put<uint8_t>(a.all_shards ? 1 : 0);
    w.Put<uint32_t>(static_cast<uint32_t>(a.shards.size()));
    for (uint32_t sh : a.shards) w.Put<uint32_t>(sh);
  }
  return buf;
}
}  // namespace

StatusOr<uint64_t> Durability::AppendApplied(const std::vector<PushDedup::Applied>& applied) {
  ENGRAM_ASSIGN_OR_RETURN(uint64_t lsn, wal_->Append(EncodeApplied(applied)));
  records_++;
  return lsn;
}

StatusOr<uint64_t> Durability::Append(LogRecord& record) {
  ENGRAM_ASSIGN_OR_RETURN(uint64_t lsn, wal_->Append(record.bytes()));
  records_++;
  return lsn;
}

Status Durability::Sync(uint64_t lsn) { return wal_->Sync(lsn); }

Status Durability::ApplyRecord(std::span<const uint8_t> payload, TableRegistry* registry, PushDedup* dedup,
                               RecoveryStats* stats, bool from_checkpoint) {
  wire::Reader r(payload.data(), payload.size());
  uint8_t kind = 0;
  ENGRAM_RETURN_IF_ERROR(r.Get(&kind));
  if (kind == static_cast<uint8_t>(RecordKind::kApplied)) {
    uint32_t n = 0;
    ENGRAM_RETURN_IF_ERROR(r.Get(&n));
    for (uint32_t i = 0; i < n; ++i) {
      uint64_t client = 0, seq = 0;
      ENGRAM_RETURN_IF_ERROR(r.Get(&client));
      ENGRAM_RETURN_IF_ERROR(r.Get(&seq));
      dedup->RecordApplied(client, seq);  // Checkpoints before kAppliedShards: shards unknown.
      stats->applied_pushes++;
    }
    return Status::OK();
  }
  if (kind == static_cast<uint8_t>(RecordKind::kAppliedShards)) {
    uint32_t n = 0;
    ENGRAM_RETURN_IF_ERROR(r.Get(&n));
    std::vector<uint32_t> shards;
    for (uint32_t i = 0; i < n; ++i) {
      uint64_t client = 0, seq = 0;
      uint8_t all = 0;
      uint32_t k = 0;
      ENGRAM_RETURN_IF_ERROR(r.Get(&client));
      ENGRAM_RETURN_IF_ERROR(r.Get(&seq));
      ENGRAM_RETURN_IF_ERROR(r.Get(&all));
      ENGRAM_RETURN_IF_ERROR(r.Get(&k));
      if (k > r.remaining() / 4) return Status::DataLoss("malformed applied-pushes record");
      shards.resize(k);
      for (uint32_t& sh : shards) ENGRAM_RETURN_IF_ERROR(r.Get(&sh));
      dedup->RecordApplied(client, seq, shards, all != 0);
      stats->applied_pushes++;
    }
    return Status::OK();
  }
  if (kind == static_cast<uint8_t>(RecordKind::kTables) || kind == static_cast<uint8_t>(RecordKind::kTableOwners)) {
    return Status::OK();  // For restores only.
  }
  if (kind < 1 || kind > 3) return Status::DataLoss("unknown log record kind " + std::to_string(kind));
  RowsHeader h;
  ENGRAM_RETURN_IF_ERROR(ReadRowsHeader(r, &h));
  auto t = registry->Get(h.table);
  // A record of a table dropped since (or dropped and created again) is history.
  if (!t.ok() || (*t)->incarnation() != h.incarnation) return Status::OK();
  const bool gradients = kind == static_cast<uint8_t>(RecordKind::kPush);
  const size_t want = gradients ? size_t{(*t)->schema().dim} * sizeof(float) : (*t)->schema().value_bytes();
  if (h.row_bytes != want) return Status::DataLoss("log record of '" + h.table + "' has the wrong row size");
  std::vector<uint64_t> rows;  // A push's, for the shards it was applied to.
  ENGRAM_RETURN_IF_ERROR(ForEachLoggedRow(r, h, [&](uint64_t row, uint64_t version, const uint8_t* data,
                                                   const uint8_t* state) {
    if (gradients && h.client != 0) rows.push_back(row);
    const Status st = gradients ? (*t)->ReplayGradient(row, version, reinterpret_cast<const float*>(data))
                                : (*t)->Restore(row, version, data, state);
    return st.WithContext("log record of '" + h.table + "'");
  }));
  if (from_checkpoint) {
    stats->checkpoint_rows += h.rows;
  } else {
    stats->log_records++;
    stats->log_rows += h.rows;
  }
  if (gradients && h.client != 0) {
    dedup->RecordApplied(h.client, h.seq, (*t)->ShardsOf(rows), /*all_shards=*/false);
    stats->applied_pushes++;
  }
  return Status::OK();
}

StatusOr<CheckpointStats> Durability::Checkpoint(const TableRegistry& registry, PushDedup* dedup,
                                                  const std::string& label) {
  if (label.find_first_of("/\n") != std::string::npos || label.size() > 128) {
    return Status::InvalidArgument("checkpoint label must be at most 128 characters, without '/' or newlines");
  }
  std::lock_guard<std::mutex> one_at_a_time(checkpoint_mu_);
  const auto t0 = std::chrono::steady_clock::now();
  CheckpointStats cs;
  const auto tables = registry.Tables();
  std::vector<PushDedup::Applied> applied;
  {
    // No logged write is between its apply and its append while every table's write locks are
    // held: the new segment gets exactly the writes not yet logged, and `applied` lists every
    // push whose record went to the segments this checkpoint replaces.
    std::vector<std::vector<std::unique_lock<std::mutex>>> locks;
    for (const auto& t : tables) locks.push_back(t->LockWrites());
    ENGRAM_ASSIGN_OR_RETURN(cs.checkpoint, wal_->Rotate());
    applied = dedup->Logged();
  }
  const std::string root = options_.dir + "/checkpoints";
  const std::string tmp = root + "/" + std::to_string(cs.checkpoint) + ".tmp";
  std::filesystem::remove_all(tmp);
  {
    storage::WalOptions wo;  // Synced once at the end.
    wo.sync = true;
    ENGRAM_ASSIGN_OR_RETURN(auto out, storage::WriteAheadLog::Open(tmp, wo));
    std::vector<uint8_t> buf = EncodeApplied(applied);
    wire::Writer w(&buf);
    ENGRAM_ASSIGN_OR_RETURN(uint64_t last, out->Append(buf));
    // Which tables (and incarnations) this checkpoint holds, for restores.
    buf.clear();
    w.Put<uint8_t>(static_cast<uint8_t>(RecordKind::kTables));
    w.Put<uint32_t>(static_cast<uint32_t>(tables.size()));
    for (const auto& t : tables) {
      w.PutString(t->schema().name);
      w.Put<uint64_t>(t->incarnation());
    }
    ENGRAM_ASSIGN_OR_RETURN(last, out->Append(buf));
    buf.clear();
    w.Put<uint8_t>(static_cast<uint8_t>(RecordKind::kTableOwners));
    w.Put<uint32_t>(static_cast<uint32_t>(tables.size()));
    for (const auto& t : tables) {
      w.PutString(t->schema().name);
      w.Put<uint64_t>(t->incarnation());
      const auto owners = t->shard_map().owners();
      w.Put<uint32_t>(static_cast<uint32_t>(owners.size()));
      for (uint32_t o : owners) w.Put<uint32_t>(o);
    }
    ENGRAM_ASSIGN_OR_RETURN(last, out->Append(buf));
    for (const auto& t : tables) {
      // Shards being moved here too: once the move completes, their rows' log records may be
      // gone (replaced by this checkpoint).
      for (const auto& shard : t->CheckpointShards()) {
        std::unique_ptr<LogRecord> rec = std::make_unique<LogRecord>(RecordKind::kCheckpointRows, *t);
        Status st;
        auto flush = [&] {
          if (rec->rows() == 0 || !st.ok()) return;
          auto lsn = out->Append(rec->bytes());
          if (!lsn.ok()) st = lsn.status();
          else last = *lsn;
          cs.rows += rec->rows();
          cs.bytes += rec->bytes().size();
          rec = std::make_unique<LogRecord>(RecordKind::kCheckpointRows, *t);
        };
        Status scan = shard->ForEachTouched([&](uint64_t row, uint64_t version, const uint8_t* value, const uint8_t* state) {
          rec->Add(row, version, value, state);
          if (rec->bytes().size() >= kCheckpointRecordBytes) flush();
        });
        flush();
        ENGRAM_RETURN_IF_ERROR(scan);
        ENGRAM_RETURN_IF_ERROR(st);
      }
    }
    ENGRAM_RETURN_IF_ERROR(out->Sync(last));
  }
  if (!label.empty()) {
    std::vector<uint8_t> l(label.begin(), label.end());
    ENGRAM_RETURN_IF_ERROR(WriteFileAtomically(tmp, "LABEL", l));
  }
  const std::string final_dir = root + "/" + std::to_string(cs.checkpoint);
  if (::rename(tmp.c_str(), final_dir.c_str()) != 0) return Errno("rename " + tmp);
  ENGRAM_RETURN_IF_ERROR(SyncPath(root, true));
  // Now the checkpoint stands in for older log segments and checkpoints.
  ENGRAM_RETURN_IF_ERROR(wal_->DropSegmentsBelow(cs.checkpoint));
  for (uint64_t old : Checkpoints(root)) {
    const std::string dir = root + "/" + std::to_string(old);
    if (old < cs.checkpoint && !std::filesystem::exists(dir + "/LABEL")) std::filesystem::remove_all(dir);
  }
  cs.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return cs;
}

StatusOr<uint64_t> Durability::DropCheckpointLabel(const std::string& label) {
  std::lock_guard<std::mutex> one_at_a_time(checkpoint_mu_);
  const std::string root = options_.dir + "/checkpoints";
  const auto all = Checkpoints(root);
  uint64_t dropped = 0;
  for (uint64_t n : all) {
    const std::string dir = root + "/" + std::to_string(n);
    std::ifstream f(dir + "/LABEL");
    std::string l((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    if (!f || l != label) continue;
    std::error_code ec;
    if (n == all.back()) {
      std::filesystem::remove(dir + "/LABEL", ec);  // Recovery still starts from it.
    } else {
      std::filesystem::remove_all(dir, ec);
    }
    if (ec) return Status::IoError("dropping checkpoint " + dir + ": " + ec.message());
    ++dropped;
  }
  if (dropped == 0) return Status::NotFound("no checkpoint labeled '" + label + "' on this server");
  ENGRAM_RETURN_IF_ERROR(SyncPath(root, true));
  return dropped;
}

StatusOr<std::pair<uint64_t, uint64_t>> Durability::RestoreTable(Table* table, const std::string& label) {
  const std::string root = options_.dir + "/checkpoints";
  std::string dir;
  for (uint64_t n : Checkpoints(root)) {  // Ascending: the last match is the newest.
    std::ifstream f(root + "/" + std::to_string(n) + "/LABEL");
    std::string l((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    if (f && l == label) dir = root + "/" + std::to_string(n);
  }
  if (dir.empty()) return Status::NotFound("no checkpoint labeled '" + label + "' on this server");
  const std::string& name = table->schema().name;
  const size_t vb = table->schema().value_bytes();
  // Rows the checkpoint restores, per local row (a bit each).
  std::vector<bool> restored(table->schema().num_rows, false);
  uint64_t n_restored = 0, n_reset = 0;
  bool listed = false;
  auto locks = table->LockWrites();
  if (table->moving()) {
    return Status::FailedPrecondition("a shard of table '" + name + "' is being moved; restore after the move");
  }
  {
    const cluster::ShardMap& map = table->map_under_write_locks();
    for (uint32_t s = 0; s < map.num_shards(); ++s) {
      if (map.Owner(s) == table->node_id() && map.Backup(s) != cluster::kNoNode) {
        return Status::FailedPrecondition("shard " + std::to_string(s) + " of '" + name +
                                          "' has a backup, which a restore would leave behind (drop it first)");
      }
    }
  }
  {  // The whole checkpoint read once first: a damaged one is refused before any row changes.
    storage::WalReplayStats check;
    ENGRAM_RETURN_IF_ERROR(
        storage::WriteAheadLog::Replay(dir, 0, [](std::span<const uint8_t>) { return Status::OK(); }, &check));
    if (!check.torn_tails.empty() || !check.corrupt.empty()) {
      return Status::DataLoss("checkpoint " + dir + " is damaged: " +
                              (check.corrupt.empty() ? check.torn_tails[0] : check.corrupt[0]));
    }
  }
  auto record = std::make_unique<LogRecord>(RecordKind::kPut, *table);
  uint64_t lsn = 0;
  auto flush = [&]() -> Status {
    if (record->rows() == 0) return Status::OK();
    ENGRAM_ASSIGN_OR_RETURN(lsn, Append(*record));
    record = std::make_unique<LogRecord>(RecordKind::kPut, *table);
    return Status::OK();
  };
  ENGRAM_RETURN_IF_ERROR(storage::WriteAheadLog::Replay(dir, 0, [&](std::span<const uint8_t> p) -> Status {
    wire::Reader r(p.data(), p.size());
    uint8_t kind = 0;
    ENGRAM_RETURN_IF_ERROR(r.Get(&kind));
    if (kind == static_cast<uint8_t>(RecordKind::kTableOwners)) {
      // Rows of a shard this node did not own then are not in this checkpoint: restoring would
      // reset them to their initial values. Refused before any row changes.
      uint32_t n = 0;
      ENGRAM_RETURN_IF_ERROR(r.Get(&n));
      for (uint32_t i = 0; i < n; ++i) {
        std::string t;
        uint64_t inc = 0;
        uint32_t shards = 0;
        ENGRAM_RETURN_IF_ERROR(r.GetString(&t, 128));
        ENGRAM_RETURN_IF_ERROR(r.Get(&inc));
        ENGRAM_RETURN_IF_ERROR(r.Get(&shards));
        if (shards > (1u << 20)) return Status::DataLoss("checkpoint " + dir + ": implausible shard count");
        std::vector<uint32_t> then(shards);
        for (uint32_t& o : then) ENGRAM_RETURN_IF_ERROR(r.Get(&o));
        if (t != name || inc != table->incarnation()) continue;
        const auto& now = table->map_under_write_locks().owners();
        for (uint32_t s = 0; s < now.size(); ++s) {
          const bool mine_now = now[s] == table->node_id(), mine_then = s < then.size() && then[s] == table->node_id();
          if (mine_now != mine_then) {
            return Status::FailedPrecondition(
                "shard " + std::to_string(s) + " of '" + name + "' was " + (mine_then ? "" : "not ") +
                "on this node at checkpoint '" + label + "' and is " + (mine_now ? "" : "not ") +
                "now: its rows would be lost or left behind; move the shards back as they were, or restore a newer "
                "checkpoint (nothing was changed)");
          }
        }
      }
      return Status::OK();
    }
    if (kind == static_cast<uint8_t>(RecordKind::kTables)) {
      uint32_t n = 0;
      ENGRAM_RETURN_IF_ERROR(r.Get(&n));
      for (uint32_t i = 0; i < n; ++i) {
        std::string t;
        uint64_t inc = 0;
        ENGRAM_RETURN_IF_ERROR(r.GetString(&t, 128));
        ENGRAM_RETURN_IF_ERROR(r.Get(&inc));
        if (t == name && inc == table->incarnation()) listed = true;
      }
      if (!listed) {
        return Status::FailedPrecondition("checkpoint '" + label + "' does not hold this table '" + name +
                                          "' (it was created after the checkpoint, or dropped and created again)");
      }
      return Status::OK();
    }
    if (kind != static_cast<uint8_t>(RecordKind::kCheckpointRows)) return Status::OK();
    RowsHeader h;
    ENGRAM_RETURN_IF_ERROR(ReadRowsHeader(r, &h));
    if (h.table != name || h.incarnation != table->incarnation()) return Status::OK();
    if (!listed) return Status::DataLoss("checkpoint " + dir + " lists its tables after their rows");
    if (h.row_bytes != vb) return Status::DataLoss("checkpoint rows of '" + name + "' have the wrong size");
    return ForEachLoggedRow(r, h, [&](uint64_t row, uint64_t, const uint8_t* value, const uint8_t* state) -> Status {
      if (row >= restored.size()) return Status::DataLoss("checkpoint row outside the table");
      ENGRAM_RETURN_IF_ERROR(table->Rewrite(row, value, state, record.get()));
      restored[row] = true;
      ++n_restored;
      return record->bytes().size() >= kCheckpointRecordBytes ? flush() : Status::OK();
    });
  }, nullptr));
  if (!listed) return Status::DataLoss("checkpoint " + dir + " has no table list");
  // Rows written since the checkpoint go back to their initial value.
  Status st;
  for (uint32_t s = 0; s < table->num_shards() && st.ok(); ++s) {
    const storage::Shard* shard = table->shard_under_write_locks(s);
    if (shard == nullptr) continue;
    std::vector<uint64_t> reset;
    st = shard->ForEachTouched([&](uint64_t row, uint64_t, const uint8_t*, const uint8_t*) {
      if (!restored[row]) reset.push_back(row);
    });
    for (uint64_t row : reset) {
      if (!st.ok()) break;
      st = table->Rewrite(row, nullptr, nullptr, record.get());
      ++n_reset;
      if (st.ok() && record->bytes().size() >= kCheckpointRecordBytes) st = flush();
    }
  }
  ENGRAM_RETURN_IF_ERROR(st);
  ENGRAM_RETURN_IF_ERROR(flush());
  if (lsn > 0) ENGRAM_RETURN_IF_ERROR(Sync(lsn));
  return std::make_pair(n_restored, n_reset);
}

}  // namespace engram::ps
