// Service: request decoding, validation and execution.
#include "ps/service.h"

#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <set>

#include <glog/logging.h>
#include <nlohmann/json.hpp>

#include "storage/optimizer.h"

namespace engram::ps {
namespace {

const char* TypeName(uint16_t t) {
  switch (static_cast<wire::MsgType>(t)) {
    case wire::MsgType::kHello: return "hello";
    case wire::MsgType::kCreateTable: return "create_table";
    case wire::MsgType::kDropTable: return "drop_table";
    case wire::MsgType::kListTables: return "list_tables";
    case wire::MsgType::kDescribeTable: return "describe_table";
    case wire::MsgType::kPull: return "pull";
    case wire::MsgType::kPush: return "push";
    case wire::MsgType::kPut: return "put";
    case wire::MsgType::kStats: return "stats";
    case wire::MsgType::kRmaInfo: return "rma_info";
    case wire::MsgType::kCheckpoint: return "checkpoint";
    case wire::MsgType::kRestore: return "restore";
    case wire::MsgType::kDropCheckpoint: return "drop_checkpoint";
    case wire::MsgType::kShardPrepare: return "shard_prepare";
    case wire::MsgType::kShardTrack: return "shard_track";
    case wire::MsgType::kShardRead: return "shard_read";
    case wire::MsgType::kShardWrite: return "shard_write";
    case wire::MsgType::kShardFreeze: return "shard_freeze";
    case wire::MsgType::kAdoptMap: return "adopt_map";
    case wire::MsgType::kShardAbort: return "shard_abort";
    case wire::MsgType::kNodes: return "nodes";
    case wire::MsgType::kShardPush: return "shard_push";
    case wire::MsgType::kReplicate: return "replicate";
    case wire::MsgType::kPullAnyCopy: return "pull_any_copy";
    case wire::MsgType::kShardAppliedRead: return "shard_applied_read";
    case wire::MsgType::kShardAppliedWrite: return "shard_applied_write";
  }
  return "unknown";
}

constexpr size_t kSmallPullRows = 8192;

}  // namespace

bool Service::IsHeavy(const wire::Header& h, size_t payload_len) {
  switch (static_cast<wire::MsgType>(h.type)) {
    case wire::MsgType::kPush:
    case wire::MsgType::kPut:
    case wire::MsgType::kCheckpoint:
    case wire::MsgType::kRestore:
    case wire::MsgType::kDropCheckpoint:
    case wire::MsgType::kDropTable:
    case wire::MsgType::kShardPrepare:
    case wire::MsgType::kShardTrack:
    case wire::MsgType::kShardRead:
    case wire::MsgType::kShardWrite:
    case wire::MsgType::kShardFreeze:
    case wire::MsgType::kAdoptMap:
    case wire::MsgType::kShardAbort:
    case wire::MsgType::kNodes:
    case wire::MsgType::kShardPush:
    case wire::MsgType::kShardAppliedRead:
    case wire::MsgType::kShardAppliedWrite:
    case wire::MsgType::kReplicate:
    case wire::MsgType::kCreateTable: return true;
    case wire::MsgType::kPull:
    case wire::MsgType::kPullAnyCopy: return payload_len > kSmallPullRows * sizeof(uint64_t);
    case wire::MsgType::kHello: return false;
    default: return true;  // Admin and metadata calls take table locks: off the I/O thread.
  }
}

bool Service::IsRead(const wire::Header& h) {
  switch (static_cast<wire::MsgType>(h.type)) {
    case wire::MsgType::kHello:
    case wire::MsgType::kListTables:
    case wire::MsgType::kDescribeTable:
    case wire::MsgType::kPull:
    case wire::MsgType::kPullAnyCopy:
    case wire::MsgType::kStats:
    case wire::MsgType::kRmaInfo:
    case wire::MsgType::kNodes: return true;
    default: return false;
  }
}

std::optional<Reply> Service::HandleOnIoThread(const wire::Header& h, const uint8_t* payload, size_t len) {
  const auto type = static_cast<wire::MsgType>(h.type);
  if (type != wire::MsgType::kPull && type != wire::MsgType::kPullAnyCopy) return Handle(h, payload, len);
  Reply reply;
  wire::Reader r(payload, len);
  bool would_block = false;
  Status s = Pull(h, r, &reply.payload, type == wire::MsgType::kPullAnyCopy, &would_block);
  if (would_block) return std::nullopt;
  return Answer(h, s, std::move(reply));
}

Reply Service::Handle(const wire::Header& h, const uint8_t* payload, size_t len) {
  Reply reply;
  wire::Reader r(payload, len);
  Status s = Run(h, r, &reply.payload);
  return Answer(h, s, std::move(reply));
}

Reply Service::Answer(const wire::Header& h, const Status& s, Reply reply) {
  const size_t slot = h.type < 16 ? h.type : 0;
  counters_.requests[slot]++;
  if (!s.ok()) {
    counters_.errors[slot]++;
    reply.code = s.code();
    reply.payload.assign(s.message().begin(), s.message().end());
    if (s.IsStaleShardMap()) {  // The refusing side's epoch travels in the message's tail.
      wire::Writer w(&reply.payload);
      w.Put<uint64_t>(s.epoch());
    }
  }
  return reply;
}

Status Service::Run(const wire::Header& h, wire::Reader& r, std::vector<uint8_t>* out) {
  wire::Writer w(out);
  switch (static_cast<wire::MsgType>(h.type)) {
    case wire::MsgType::kHello: {
      w.Put<uint16_t>(wire::kProtocolVersion);
      w.Put<uint32_t>(options_.node_id);
      // The worker address, for clients on this host that send requests over shared memory.
      const std::vector<uint8_t> addr = options_.remote ? options_.remote->WorkerAddress() : std::vector<uint8_t>{};
      w.Put<uint32_t>(static_cast<uint32_t>(addr.size()));
      if (!addr.empty()) std::memcpy(w.Reserve(addr.size()), addr.data(), addr.size());
      // Same-host clients that map our arenas check this process is still there (a dead
      // process's shared memory stays readable in their mappings).
      w.Put<uint32_t>(static_cast<uint32_t>(::getpid()));
      return Status::OK();
    }
    case wire::MsgType::kCreateTable: return CreateTable(r);
    case wire::MsgType::kDropTable: {
      std::string name;
      ENGRAM_RETURN_IF_ERROR(r.GetString(&name, 128));
      ENGRAM_RETURN_IF_ERROR(registry_.DropTable(name));
      return durability_ ? durability_->SaveCatalog(registry_) : Status::OK();
    }
    case wire::MsgType::kListTables: {
      const auto names = registry_.List();
      std::vector<wire::TableInfo> infos;
      for (const auto& n : names) {
        auto t = registry_.Get(n);
        if (t.ok()) infos.push_back(Info(**t));  // Skips a table dropped meanwhile.
      }
      w.Put<uint32_t>(static_cast<uint32_t>(infos.size()));
      for (const auto& i : infos) wire::PutTableInfo(w, i);
      return Status::OK();
    }
    case wire::MsgType::kDescribeTable: {
      std::string name;
      ENGRAM_RETURN_IF_ERROR(r.GetString(&name, 128));
      ENGRAM_ASSIGN_OR_RETURN(auto t, registry_.Get(name));
      wire::PutTableInfo(w, Info(*t));
      return Status::OK();
    }
    case wire::MsgType::kPull: return Pull(h, r, out);
    case wire::MsgType::kPullAnyCopy: return Pull(h, r, out, /*any_copy=*/true);
    case wire::MsgType::kPush: return Push(h, r);
    case wire::MsgType::kPut: return Put(h, r);
    case wire::MsgType::kStats: {
      const std::string s = StatusJson();
      w.PutString(s);
      return Status::OK();
    }
    case wire::MsgType::kRmaInfo: return RmaInfo(r, out);
    case wire::MsgType::kShardPrepare:
    case wire::MsgType::kShardTrack:
    case wire::MsgType::kShardRead:
    case wire::MsgType::kShardWrite:
    case wire::MsgType::kShardFreeze:
    case wire::MsgType::kShardPush:
    case wire::MsgType::kShardAppliedRead:
    case wire::MsgType::kShardAppliedWrite:
    case wire::MsgType::kShardAbort: return MoveStep(static_cast<wire::MsgType>(h.type), r, out);
    case wire::MsgType::kReplicate: return Replicate(r);
    case wire::MsgType::kNodes: {
      if (!options_.cluster_nodes) return Status::FailedPrecondition("this server is not part of an etcd cluster");
      ENGRAM_ASSIGN_OR_RETURN(auto nodes, options_.cluster_nodes());
      w.Put<uint32_t>(static_cast<uint32_t>(nodes.size()));
      for (const auto& [id, addr] : nodes) {
        w.Put<uint32_t>(id);
        w.PutString(addr);
      }
      return Status::OK();
    }
    case wire::MsgType::kAdoptMap: {
      wire::TableInfo info;
      ENGRAM_RETURN_IF_ERROR(wire::GetTableInfo(r, &info));
      uint8_t forwarded = 0;  // Optional: set on a map forwarded by the node gaining a shard.
      if (r.remaining() > 0) ENGRAM_RETURN_IF_ERROR(r.Get(&forwarded));
      return AdoptRecord(info, /*retire_first=*/forwarded == 0);
    }
    case wire::MsgType::kCheckpoint: {
      std::string label;
      if (r.remaining() > 0) ENGRAM_RETURN_IF_ERROR(r.GetString(&label, 128));
      ENGRAM_ASSIGN_OR_RETURN(auto cs, Checkpoint(label));
      w.PutString(nlohmann::json{{"node", options_.node_id}, {"checkpoint", cs.checkpoint}, {"rows", cs.rows},
                                 {"bytes", cs.bytes}, {"seconds", cs.seconds}, {"label", label}}.dump());
      return Status::OK();
    }
    case wire::MsgType::kDropCheckpoint: {
      std::string label;
      ENGRAM_RETURN_IF_ERROR(r.GetString(&label, 128));
      if (!durability_) return Status::FailedPrecondition("this server runs without --data_dir: it has no checkpoints");
      ENGRAM_ASSIGN_OR_RETURN(uint64_t n, durability_->DropCheckpointLabel(label));
      w.PutString(nlohmann::json{{"node", options_.node_id}, {"label", label}, {"dropped", n}}.dump());
      return Status::OK();
    }
    case wire::MsgType::kRestore: {
      std::string name, label;
      ENGRAM_RETURN_IF_ERROR(r.GetString(&name, 128));
      ENGRAM_RETURN_IF_ERROR(r.GetString(&label, 128));
      if (!durability_) return Status::FailedPrecondition("this server runs without --data_dir: it has no checkpoints");
      ENGRAM_ASSIGN_OR_RETURN(auto t, registry_.Get(name));
      const auto t0 = std::chrono::steady_clock::now();
      ENGRAM_ASSIGN_OR_RETURN(auto n, RestoreTable(*t, label));
      w.PutString(nlohmann::json{{"node", options_.node_id}, {"table", name}, {"label", label},
                                 {"rows_restored", n.first}, {"rows_reset", n.second},
                                 {"seconds", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()}}
                      .dump());
      return Status::OK();
    }
  }
  return Status::InvalidArgument("unknown request type " + std::to_string(h.type));
}

Status Service::FollowRecord(const wire::TableInfo& record, bool* created) {
  *created = false;
  if (registry_.Get(record.schema.name).ok()) return Status::OK();
  ENGRAM_ASSIGN_OR_RETURN(auto map, cluster::ShardMap::Create(record.schema.num_rows, record.owners, record.epoch, record.backups));
  const uint64_t incarnation = durability_ ? durability_->NextIncarnation() : 0;
  ENGRAM_RETURN_IF_ERROR(registry_.CreateTable(record.schema, std::move(map), options_.node_id, incarnation).status());
  if (durability_) ENGRAM_RETURN_IF_ERROR(durability_->SaveCatalog(registry_));
  *created = true;
  return Status::OK();
}

namespace {

// Appends ShardImages (include/engram/wire.h).
void PutImages(wire::Writer& w, const std::vector<RowImage>& images, size_t vb, size_t sb) {
  w.Put<uint32_t>(static_cast<uint32_t>(images.size()));
  w.Put<uint32_t>(static_cast<uint32_t>(vb));
  w.Put<uint32_t>(static_cast<uint32_t>(sb));
  for (const RowImage& im : images) wire::PutRowEntry(w, im.row, im.version, im.value.data(), vb, im.state.data(), sb);
}

}  // namespace

Status Service::MoveStep(wire::MsgType type, wire::Reader& r, std::vector<uint8_t>* out) {
  std::string name;
  uint32_t shard = 0;
  ENGRAM_RETURN_IF_ERROR(r.GetString(&name, 128));
  ENGRAM_RETURN_IF_ERROR(r.Get(&shard));
  ENGRAM_ASSIGN_OR_RETURN(auto t, registry_.Get(name));
  if (shard >= t->num_shards()) return Status::InvalidArgument("table '" + name + "' has no shard " + std::to_string(shard));
  wire::Writer w(out);
  const size_t vb = t->schema().value_bytes();
  const size_t sb = IsTrainable(t->schema().dtype) ? storage::OptimizerStateBytes(t->schema().optimizer, t->schema().dim) : 0;
  uint64_t op = 0;  // The steps that start, freeze or end an operation name it.
  if (type == wire::MsgType::kShardPrepare || type == wire::MsgType::kShardTrack || type == wire::MsgType::kShardAbort ||
      type == wire::MsgType::kShardFreeze || type == wire::MsgType::kShardAppliedWrite) {
    ENGRAM_RETURN_IF_ERROR(r.Get(&op));
    if (op == 0) return Status::InvalidArgument("a move step needs a nonzero operation id");
  }
  if (op != 0) {  // Rare administrative steps: each one leaves a line for the operator.
    LOG(INFO) << TypeName(static_cast<uint16_t>(type)) << " of shard " << shard << " of '" << name << "' (operation " << std::hex << op
              << std::dec << ")";
  }
  switch (type) {
    case wire::MsgType::kShardPrepare: return t->PrepareIncoming(shard, op);
    case wire::MsgType::kShardTrack: return t->TrackOutgoing(shard, op);
    case wire::MsgType::kShardAbort: t->AbortMove(shard, op); return Status::OK();
    case wire::MsgType::kShardFreeze: {
      ENGRAM_ASSIGN_OR_RETURN(uint64_t n, t->FreezeOutgoing(shard, op));
      w.Put<uint64_t>(n);
      return Status::OK();
    }
    case wire::MsgType::kShardAppliedRead: {
      const auto applied = dedup_.AppliedTo(shard);
      w.Put<uint32_t>(static_cast<uint32_t>(applied.size()));
      for (const auto& [client, seq] : applied) {
        w.Put<uint64_t>(client);
        w.Put<uint64_t>(seq);
      }
      return Status::OK();
    }
    case wire::MsgType::kShardAppliedWrite: {
      uint32_t n = 0;
      ENGRAM_RETURN_IF_ERROR(r.Get(&n));
      if (n != r.remaining() / 16 || r.remaining() % 16 != 0) {
        return Status::InvalidArgument("malformed frame: applied pushes of shard " + std::to_string(shard));
      }
      std::vector<PushDedup::Applied> applied(n);
      for (auto& a : applied) {
        ENGRAM_RETURN_IF_ERROR(r.Get(&a.client));
        ENGRAM_RETURN_IF_ERROR(r.Get(&a.seq));
        a.shards = {shard};
      }
      // The driver's last step before its flip: the copy is complete (see Table::SealIncoming).
      // Sealed first: the entries of another operation's copy are not recorded.
      ENGRAM_RETURN_IF_ERROR(t->SealIncoming(shard, op));
      // Recorded first, logged second: a checkpoint in between lists them (and the record goes
      // to the log after it), never neither.
      for (const auto& a : applied) dedup_.RecordApplied(a.client, a.seq, a.shards, /*all_shards=*/false);
      if (durability_ && !applied.empty()) {
        ENGRAM_ASSIGN_OR_RETURN(uint64_t lsn, durability_->AppendApplied(applied));
        ENGRAM_RETURN_IF_ERROR(durability_->Sync(lsn));
      }
      return Status::OK();
    }
    case wire::MsgType::kShardRead: {
      uint64_t cursor = 0;
      uint32_t max_rows = 0;
      uint8_t dirty = 0;
      ENGRAM_RETURN_IF_ERROR(r.Get(&cursor));
      ENGRAM_RETURN_IF_ERROR(r.Get(&max_rows));
      ENGRAM_RETURN_IF_ERROR(r.Get(&dirty));
      max_rows = std::min<uint32_t>(max_rows, std::max<size_t>(1, (size_t{8} << 20) / (16 + vb + sb)));  // <= 8 MiB.
      std::vector<RowImage> images;
      ENGRAM_ASSIGN_OR_RETURN(uint64_t next, t->ReadOutgoing(shard, cursor, max_rows, dirty != 0, &images));
      w.Put<uint64_t>(next);
      PutImages(w, images, vb, sb);
      return Status::OK();
    }
    case wire::MsgType::kShardPush: {  // kShardRead, sent on to the destination by this node.
      std::string to;
      uint64_t cursor = 0;
      uint32_t max_rows = 0;
      uint8_t dirty = 0;
      ENGRAM_RETURN_IF_ERROR(r.GetString(&to, 256));
      ENGRAM_RETURN_IF_ERROR(r.Get(&cursor));
      ENGRAM_RETURN_IF_ERROR(r.Get(&max_rows));
      ENGRAM_RETURN_IF_ERROR(r.Get(&dirty));
      if (!options_.peer_call) return Status::FailedPrecondition("this server cannot call other servers");
      max_rows = std::min<uint32_t>(max_rows, std::max<size_t>(1, (size_t{8} << 20) / (16 + vb + sb)));
      std::vector<RowImage> images;
      ENGRAM_ASSIGN_OR_RETURN(uint64_t next, t->ReadOutgoing(shard, cursor, max_rows, dirty != 0, &images));
      if (!images.empty()) {
        std::vector<uint8_t> p;
        wire::Writer pw(&p);
        pw.PutString(name);
        pw.Put<uint32_t>(shard);
        PutImages(pw, images, vb, sb);
        ENGRAM_RETURN_IF_ERROR(options_.peer_call(to, wire::MsgType::kShardWrite, std::move(p), nullptr).status().WithContext(
            "sending shard rows to " + to));
      }
      w.Put<uint64_t>(next);
      w.Put<uint32_t>(static_cast<uint32_t>(images.size()));
      return Status::OK();
    }
    case wire::MsgType::kShardWrite: {
      uint32_t n = 0, rvb = 0, rsb = 0;
      ENGRAM_RETURN_IF_ERROR(r.Get(&n));
      ENGRAM_RETURN_IF_ERROR(r.Get(&rvb));
      ENGRAM_RETURN_IF_ERROR(r.Get(&rsb));
      if (rvb != vb || rsb != sb) return Status::InvalidArgument("shard images of the wrong row size for '" + name + "'");
      if (n > r.remaining() / (16 + vb + sb)) return Status::InvalidArgument("malformed frame: shard image count");
      std::vector<RowImage> images(n);
      for (RowImage& im : images) {
        const uint8_t *value = nullptr, *state = nullptr;
        ENGRAM_RETURN_IF_ERROR(wire::GetRowEntry(r, &im.row, &im.version, &value, vb, &state, sb));
        im.value.assign(value, value + vb);
        if (sb > 0) im.state.assign(state, state + sb);
        if (im.version == 0 || (im.version & 1u) != 0) return Status::InvalidArgument("shard image with a bad version");
      }
      if (r.remaining() != 0) return Status::InvalidArgument("malformed frame: trailing bytes after shard images");
      ENGRAM_RETURN_IF_ERROR(CheckWritable());
      if (!durability_) return t->WriteIncoming(shard, images, nullptr);
      LogRecord record(RecordKind::kPut, *t);
      ENGRAM_RETURN_IF_ERROR(t->WriteIncoming(shard, images, &record));
      if (record.rows() == 0) return Status::OK();
      uint64_t lsn = 0;
      ENGRAM_RETURN_IF_ERROR(LogWrite(&record, &lsn));
      return durability_->Sync(lsn);
    }
    default: break;
  }
  return Status::InvalidArgument("not a shard move request");
}

wire::TableInfo Service::Info(const Table& t) const {
  wire::TableInfo i;
  i.schema = t.schema();
  const cluster::ShardMap map = t.shard_map();
  i.epoch = map.epoch();
  i.owners = map.owners();
  i.backups = map.backups();
  i.node_id = t.node_id();
  const TableStats s = t.stats();
  i.touched_rows = s.touched_rows;
  i.bytes_per_row = s.bytes_per_row;
  return i;
}

Status Service::CreateTable(wire::Reader& r) {
  wire::TableInfo info;
  ENGRAM_RETURN_IF_ERROR(wire::GetTableInfo(r, &info));
  ENGRAM_RETURN_IF_ERROR(info.schema.Validate());
  ENGRAM_ASSIGN_OR_RETURN(auto map, cluster::ShardMap::Create(info.schema.num_rows, info.owners, info.epoch, info.backups));
  const uint64_t incarnation = durability_ ? durability_->NextIncarnation() : 0;
  ENGRAM_RETURN_IF_ERROR(registry_.CreateTable(info.schema, std::move(map), info.node_id, incarnation).status());
  if (durability_) {
    if (Status s = durability_->SaveCatalog(registry_); !s.ok()) {
      registry_.DropTable(info.schema.name).IgnoreError();  // Not durable: not created.
      return s;
    }
  }
  return Status::OK();
}

Status Service::EnableDurability(const DurabilityOptions& options, RecoveryStats* stats) {
  if (durability_) return Status::FailedPrecondition("durability is already on");
  ENGRAM_ASSIGN_OR_RETURN(durability_, Durability::Open(options, &registry_, &dedup_, stats));
  return Status::OK();
}

StatusOr<CheckpointStats> Service::Checkpoint(const std::string& label) {
  if (!durability_) return Status::FailedPrecondition("this server runs without --data_dir durability; nothing to checkpoint");
  return durability_->Checkpoint(registry_, &dedup_, label);
}

Status Service::LogWrite(LogRecord* record, uint64_t* lsn) {
  ENGRAM_ASSIGN_OR_RETURN(*lsn, durability_->Append(*record));
  return Status::OK();
}

StatusOr<std::shared_ptr<Table>> Service::TableFor(const wire::Header& h, wire::Reader& r) {
  std::string name;
  ENGRAM_RETURN_IF_ERROR(r.GetString(&name, 128));
  ENGRAM_ASSIGN_OR_RETURN(auto t, registry_.Get(name));
  // Checked again by the table under its map lock; this early check only saves work.
  if (h.epoch != 0 && h.epoch != t->epoch()) {
    return Status::StaleShardMap(t->epoch(), "table '" + name + "' is at shard-map epoch " + std::to_string(t->epoch()) +
                                                 ", request used " + std::to_string(h.epoch));
  }
  return t;
}

Status Service::ReadRows(wire::Reader& r, std::vector<uint64_t>* rows) {
  uint32_t n = 0;
  ENGRAM_RETURN_IF_ERROR(r.Get(&n));
  if (n > options_.max_batch_rows) {
    return Status::InvalidArgument("batch of " + std::to_string(n) + " rows exceeds the server's limit of " +
                                   std::to_string(options_.max_batch_rows));
  }
  const uint8_t* p = nullptr;
  ENGRAM_RETURN_IF_ERROR(r.GetSpan(size_t{n} * 8, &p));
  rows->resize(n);
  if (n > 0) std::memcpy(rows->data(), p, size_t{n} * 8);
  return Status::OK();
}

Status Service::Pull(const wire::Header& h, wire::Reader& r, std::vector<uint8_t>* out, bool any_copy,
                     bool* would_block) {
  if (options_.read_allowed && !options_.read_allowed()) {
    return Status::Unavailable("node " + std::to_string(options_.node_id) +
                               " holds no etcd lease now, or is catching up with the cluster's shard maps after "
                               "rejoining: reads wait until it has; retry");
  }
  ENGRAM_ASSIGN_OR_RETURN(auto t, TableFor(h, r));
  std::vector<uint64_t> rows;
  ENGRAM_RETURN_IF_ERROR(ReadRows(r, &rows));
  if (r.remaining() != 0) return Status::InvalidArgument("malformed frame: trailing bytes after pull");
  const size_t vb = t->schema().value_bytes();
  wire::Writer w(out);
  w.Put<uint32_t>(static_cast<uint32_t>(rows.size()));
  w.Put<uint32_t>(static_cast<uint32_t>(vb));
  uint8_t* dst = w.Reserve(rows.size() * vb);  // Gather straight into the reply.
  ENGRAM_RETURN_IF_ERROR(t->Pull(rows, dst, h.epoch, any_copy, would_block));
  counters_.rows_pulled += rows.size();
  return Status::OK();
}

Status Service::CheckWritable() const {
  if (options_.write_allowed && !options_.write_allowed()) {
    return Status::Unavailable("node " + std::to_string(options_.node_id) +
                               " cannot renew its etcd lease; writes are fenced until it can (retry)");
  }
  return Status::OK();
}

Status Service::CheckBudget() const {
  if (options_.memory_budget == 0) return Status::OK();
  const uint64_t used = registry_.TouchedBytes();
  if (used >= options_.memory_budget) {
    return Status::ResourceExhausted("memory budget of " + std::to_string(options_.memory_budget) +
                                     " bytes is used up (" + std::to_string(used) +
                                     " bytes of rows materialised); nothing was applied");
  }
  return Status::OK();
}

Status Service::Push(const wire::Header& h, wire::Reader& r) {
  // The epoch is checked after the exactly-once table: a retransmission of a push this node
  // applied before its map changed must get its outcome, not StaleShardMap. But only for the
  // shards this node still owns: where they went (a move, a failover, a restarted node's step
  // down), their new owner has the part's entry if it has its rows (moves carry the entries,
  // backups record them with the rows), and applies the rows if it has not.
  std::string name;
  ENGRAM_RETURN_IF_ERROR(r.GetString(&name, 128));
  ENGRAM_ASSIGN_OR_RETURN(auto t, registry_.Get(name));
  uint64_t client = 0, seq = 0;
  ENGRAM_RETURN_IF_ERROR(r.Get(&client));
  ENGRAM_RETURN_IF_ERROR(r.Get(&seq));
  std::vector<uint64_t> rows;
  ENGRAM_RETURN_IF_ERROR(ReadRows(r, &rows));
  const uint32_t dim = t->schema().dim;
  const uint8_t* g = nullptr;
  ENGRAM_RETURN_IF_ERROR(r.GetSpan(rows.size() * dim * sizeof(float), &g).WithContext(
      "push gradients must be " + std::to_string(dim) + " f32 per row (the table's dim)"));
  if (r.remaining() != 0) {
    return Status::InvalidArgument("push gradients must be " + std::to_string(dim) +
                                   " f32 per row (the table's dim); the frame has trailing bytes");
  }
  // Before the exactly-once table: a fenced push must stay retryable, not remembered as failed.
  ENGRAM_RETURN_IF_ERROR(CheckWritable());
  Status prior;
  const std::vector<uint32_t> shards = t->ShardsOf(rows);
  std::vector<uint32_t> to_apply;
  switch (dedup_.Begin(client, seq, shards, &prior, &to_apply)) {
    case PushDedup::Verdict::kDuplicate: {
      counters_.duplicate_pushes++;
      const cluster::ShardMap map = t->shard_map();
      for (uint32_t s : shards) {
        if (map.Owner(s) != options_.node_id) {
          return Status::StaleShardMap(map.epoch(), "push " + std::to_string(seq) + " touches shard " + std::to_string(s) +
                                                        " of '" + name + "', which node " + std::to_string(map.Owner(s)) +
                                                        " owns now (epoch " + std::to_string(map.epoch()) + ")");
        }
      }
      return prior;
    }
    case PushDedup::Verdict::kInProgress:
      counters_.duplicate_pushes++;
      return Status::Unavailable("push " + std::to_string(seq) + " is still being applied; retry");
    case PushDedup::Verdict::kTooOld:
      return Status::Aborted("push " + std::to_string(seq) + " is older than the retransmission window; not applied");
    case PushDedup::Verdict::kApply: break;
  }
  if (h.epoch != 0 && h.epoch != t->epoch()) {
    dedup_.Forget(client, seq);
    return Status::StaleShardMap(t->epoch(), "table '" + name + "' is at shard-map epoch " + std::to_string(t->epoch()) +
                                                 ", request used " + std::to_string(h.epoch));
  }
  // Gradients sit 8-aligned in the payload (the Reader guarantees the offset, the receive
  // buffer comes from the allocator), so they are read in place.
  std::vector<float> kept;  // A part applied here before for some of its shards: the others' rows.
  if (to_apply.size() < shards.size()) {
    counters_.duplicate_pushes++;
    std::vector<uint64_t> rest;
    const float* all = reinterpret_cast<const float*>(g);
    for (size_t i = 0; i < rows.size(); ++i) {
      // Rows beyond the table stay: the table refuses the part for them (OutOfRange).
      if (rows[i] < t->schema().num_rows && !std::binary_search(to_apply.begin(), to_apply.end(), t->ShardOf(rows[i]))) {
        continue;
      }
      rest.push_back(rows[i]);
      kept.insert(kept.end(), all + i * dim, all + (i + 1) * dim);
    }
    rows = std::move(rest);
    g = reinterpret_cast<const uint8_t*>(kept.data());
  }
  Status s = CheckBudget();
  std::vector<uint32_t> unreached;  // Shards whose backup did not take the write.
  // Under the shards' write locks, right after the rows changed: the exactly-once table learns
  // that this part is applied to them (a move freezing one of them lists it from then on).
  auto mark_applied = [&] { dedup_.MarkApplied(client, seq); };
  if (s.ok() && (durability_ || t->replicated())) {
    std::optional<LogRecord> record;
    if (durability_) record.emplace(RecordKind::kPush, *t, client, seq);
    uint64_t lsn = 0;
    WriteLog log;
    log.sink = record ? &*record : nullptr;
    log.logged = [&]() -> Status {
      mark_applied();
      if (!record) return Status::OK();
      ENGRAM_RETURN_IF_ERROR(LogWrite(&*record, &lsn));
      dedup_.MarkLogged(client, seq);
      return Status::OK();
    };
    log.client = client;
    log.seq = seq;
    log.replicate = [&](const std::vector<uint32_t>& shards, uint32_t backup, std::vector<uint8_t> payload) {
      if (Status st = SendReplica(backup, std::move(payload)); !st.ok()) {
        LOG_FIRST_N(WARNING, 20) << "backup node " << backup << " of '" << t->schema().name
                                 << "' did not take a push: " << st.ToString();
        unreached.insert(unreached.end(), shards.begin(), shards.end());
      }
      return Status::OK();  // Applied here; the backup is dealt with below, outside the locks.
    };
    s = t->Push(rows, reinterpret_cast<const float*>(g), &log, h.epoch);
    if (s.ok() && record) s = durability_->Sync(lsn);  // Acknowledge only what a crash cannot take back.
  } else if (s.ok()) {
    WriteLog log;  // No log, no backups: only the exactly-once table's mark.
    log.logged = [&]() -> Status {
      mark_applied();
      return Status::OK();
    };
    s = t->Push(rows, reinterpret_cast<const float*>(g), &log, h.epoch);
  }
  // A push is acknowledged only once every backup of its shards has it, or has been removed
  // from the map (so it can never be promoted with the push missing).
  const bool applied = s.ok();
  std::vector<uint32_t> lost;  // Applied here, but these shards were failed over meanwhile.
  if (s.ok() && !unreached.empty()) {
    s = DropBackups(*t, unreached);
    const cluster::ShardMap now = t->shard_map();
    for (uint32_t sh : unreached) {
      if (s.IsUnavailable() && now.Owner(sh) != options_.node_id) lost.push_back(sh);
    }
    std::sort(lost.begin(), lost.end());
    lost.erase(std::unique(lost.begin(), lost.end()), lost.end());
  }
  if (!lost.empty()) {
    // Applied on copies this node no longer owns: a retry of their rows is decided afresh where
    // they went (here it is refused as stale); the shards this node kept stay applied.
    dedup_.Unapply(client, seq, lost);
  } else if (!applied && (s.IsStaleShardMap() || s.IsUnavailable())) {
    // Refused before any row changed (stale map, frozen shard): the retry is decided afresh.
    dedup_.Forget(client, seq);
  } else {
    dedup_.Finish(client, seq, s, to_apply);
  }
  if (s.ok()) counters_.rows_pushed += rows.size();
  return s;
}

uint64_t Service::TableEpoch(const std::string& name) const {
  auto t = registry_.Get(name);
  return t.ok() ? (*t)->epoch() : 0;
}

Status Service::AdoptRecord(const wire::TableInfo& info, bool retire_first) {
  ENGRAM_ASSIGN_OR_RETURN(auto t, registry_.Get(info.schema.name));
  ENGRAM_ASSIGN_OR_RETURN(auto map, cluster::ShardMap::Create(info.schema.num_rows, info.owners, info.epoch, info.backups));
  const cluster::ShardMap before = t->shard_map();
  if (map.epoch() < before.epoch()) return Status::OK();  // Superseded here already.
  const uint32_t me = options_.node_id;
  if (retire_first && map.epoch() > before.epoch() && options_.node_address && options_.peer_call) {
    std::set<uint32_t> losing;  // Live nodes that hold shards this map moves here.
    for (uint32_t s = 0; s < map.num_shards(); ++s) {
      if (map.Owner(s) == me && before.Owner(s) != me && before.Owner(s) != cluster::kNoNode) losing.insert(before.Owner(s));
    }
    std::vector<uint8_t> p;
    wire::Writer w(&p);
    wire::PutTableInfo(w, info);
    w.Put<uint8_t>(1);
    for (uint32_t n : losing) {
      auto addr = options_.node_address(n);
      if (!addr.ok()) continue;  // Not live (a promotion): nothing to retire there.
      if (auto r = options_.peer_call(*addr, wire::MsgType::kAdoptMap, p, nullptr); !r.ok()) {
        LOG(WARNING) << "node " << n << " did not take epoch " << map.epoch() << " of '" << info.schema.name
                     << "' before this node serves its shards: " << r.status().ToString();
      }
    }
  }
  ENGRAM_RETURN_IF_ERROR(t->AdoptMap(map));
  if (before.epoch() != map.epoch()) {  // What this node gained and lost, for the operator.
    std::string changes;
    for (uint32_t s = 0; s < map.num_shards(); ++s) {
      if ((before.Owner(s) == me) != (map.Owner(s) == me)) changes += (map.Owner(s) == me ? " +" : " -") + std::to_string(s);
      if ((before.Backup(s) == me) != (map.Backup(s) == me)) changes += (map.Backup(s) == me ? " +b" : " -b") + std::to_string(s);
    }
    LOG(INFO) << "table '" << info.schema.name << "': epoch " << before.epoch() << " -> " << map.epoch()
              << (changes.empty() ? " (no change here)" : ", shards here:" + changes);
  }
  if (durability_) ENGRAM_RETURN_IF_ERROR(durability_->SaveCatalog(registry_));
  return Status::OK();
}

Status Service::SendReplica(uint32_t node, std::vector<uint8_t> payload) {
  if (!options_.node_address || !options_.peer_call) return Status::FailedPrecondition("this server cannot reach its peers");
  ENGRAM_ASSIGN_OR_RETURN(std::string addr, options_.node_address(node));
  const auto silent = backups_.Begin(node);
  if (!silent) {
    return Status::Unavailable("backup node " + std::to_string(node) +
                               " went silent (a replica to it got no answer in time); not waiting on it again yet");
  }
  const Status s = options_.peer_call(addr, wire::MsgType::kReplicate, std::move(payload), silent.get()).status();
  const bool answered = s.ok() || (s.code() != Code::kDeadlineExceeded && !s.IsUnavailable() && s.code() != Code::kAborted);
  backups_.End(node, silent, answered);
  return s;
}

StatusOr<std::pair<uint64_t, uint64_t>> Service::RestoreTable(Table& t, const std::string& label) {
  ENGRAM_RETURN_IF_ERROR(t.BeginRestore());
  struct End {
    Table& t;
    ~End() { t.EndRestore(); }
  } end{t};
  // The backups of this node's shards would miss the restore: they leave the map first, and the
  // leader gives those shards new backups afterwards, copied from the restored rows (it cannot
  // start one before: the restore makes every copy from this node wait).
  const cluster::ShardMap map = t.shard_map();
  std::vector<uint32_t> backed;
  for (uint32_t s = 0; s < map.num_shards(); ++s) {
    if (map.Owner(s) == options_.node_id && map.Backup(s) != cluster::kNoNode) backed.push_back(s);
  }
  if (!backed.empty()) {
    if (!options_.drop_backups) {
      return Status::FailedPrecondition("table '" + t.schema().name +
                                        "' is replicated: restoring it needs the cluster's etcd (--etcd)");
    }
    ENGRAM_RETURN_IF_ERROR(DropBackups(t, backed).WithContext("dropping the backups of the shards to restore"));
  }
  return durability_->RestoreTable(&t, label);
}

Status Service::DropBackups(Table& t, const std::vector<uint32_t>& shards) {
  if (!options_.drop_backups) return Status::Unavailable("a backup is unreachable and this server cannot change the map");
  ENGRAM_ASSIGN_OR_RETURN(wire::TableInfo next, options_.drop_backups(t.schema().name, shards));
  ENGRAM_RETURN_IF_ERROR(AdoptRecord(next));
  for (uint32_t s : shards) {
    if (s < next.owners.size() && next.owners[s] == options_.node_id) continue;
    // This node applied the write while it was being failed over (it was frozen, or cut off):
    // the shard's new owner decides the write's fate. The client's retry of the same sequence
    // number goes there (this node now answers StaleShardMap), and the new owner answers it as
    // a duplicate if the replica reached it, or applies it.
    return Status::Unavailable("shard " + std::to_string(s) + " of '" + t.schema().name + "' was failed over to node " +
                               std::to_string(s < next.owners.size() ? next.owners[s] : cluster::kNoNode) +
                               " while this node applied the write; retry");
  }
  return Status::OK();
}

Status Service::Replicate(wire::Reader& r) {
  std::string name;
  uint64_t client = 0, seq = 0;
  ENGRAM_RETURN_IF_ERROR(r.GetString(&name, 128));
  ENGRAM_RETURN_IF_ERROR(r.Get(&client));
  ENGRAM_RETURN_IF_ERROR(r.Get(&seq));
  ENGRAM_ASSIGN_OR_RETURN(auto t, registry_.Get(name));
  const bool push = client != 0 || seq != 0;
  std::optional<LogRecord> record;
  if (durability_) record.emplace(push ? RecordKind::kPush : RecordKind::kPut, *t, client, seq);
  std::vector<uint32_t> shards;
  uint64_t lsn = 0;
  // Under the replica shards' write locks, right after the rows changed: the exactly-once entry
  // (after a promotion, however soon, the trainer's retry of this push is answered, not applied
  // again; a checkpoint has both or neither) and the log record (in apply order).
  auto applied = [&]() -> Status {
    if (push) dedup_.RecordApplied(client, seq, shards, /*all_shards=*/false);
    if (record && record->rows() > 0) ENGRAM_RETURN_IF_ERROR(LogWrite(&*record, &lsn));
    return Status::OK();
  };
  ENGRAM_RETURN_IF_ERROR(t->ApplyReplica(r, record ? &*record : nullptr, &shards, applied));
  if (lsn != 0) ENGRAM_RETURN_IF_ERROR(durability_->Sync(lsn));  // Outside the locks: group commit.
  return Status::OK();
}

Status Service::Put(const wire::Header& h, wire::Reader& r) {
  ENGRAM_ASSIGN_OR_RETURN(auto t, TableFor(h, r));
  std::vector<uint64_t> rows;
  ENGRAM_RETURN_IF_ERROR(ReadRows(r, &rows));
  const size_t vb = t->schema().value_bytes();
  const uint8_t* v = nullptr;
  ENGRAM_RETURN_IF_ERROR(r.GetSpan(rows.size() * vb, &v).WithContext("put values must be " + std::to_string(vb) +
                                                                        " bytes per row"));
  if (r.remaining() != 0) return Status::InvalidArgument("put values must be " + std::to_string(vb) + " bytes per row");
  ENGRAM_RETURN_IF_ERROR(CheckWritable());
  ENGRAM_RETURN_IF_ERROR(CheckBudget());
  if (durability_ || t->replicated()) {
    std::optional<LogRecord> record;
    if (durability_) record.emplace(RecordKind::kPut, *t);
    uint64_t lsn = 0;
    std::vector<uint32_t> unreached;
    WriteLog log;
    log.sink = record ? &*record : nullptr;
    log.logged = [&]() -> Status { return record ? LogWrite(&*record, &lsn) : Status::OK(); };
    log.replicate = [&](const std::vector<uint32_t>& shards, uint32_t backup, std::vector<uint8_t> payload) {
      if (!SendReplica(backup, std::move(payload)).ok()) unreached.insert(unreached.end(), shards.begin(), shards.end());
      return Status::OK();
    };
    ENGRAM_RETURN_IF_ERROR(t->Put(rows, v, &log, h.epoch));
    if (record) ENGRAM_RETURN_IF_ERROR(durability_->Sync(lsn));
    if (!unreached.empty()) ENGRAM_RETURN_IF_ERROR(DropBackups(*t, unreached));
  } else {
    ENGRAM_RETURN_IF_ERROR(t->Put(rows, v, nullptr, h.epoch));
  }
  counters_.rows_put += rows.size();
  return Status::OK();
}

Status Service::RmaInfo(wire::Reader& r, std::vector<uint8_t>* out) {
  std::string name;
  ENGRAM_RETURN_IF_ERROR(r.GetString(&name, 128));
  ENGRAM_ASSIGN_OR_RETURN(auto t, registry_.Get(name));
  wire::Writer w(out);
  struct Entry {
    uint32_t shard;
    std::shared_ptr<const storage::Shard> s;
    std::vector<uint8_t> rkey;
  };
  std::vector<Entry> entries;
  if (options_.remote != nullptr) {
    for (uint32_t i = 0; i < t->num_shards(); ++i) {
      auto s = t->shard(i);
      if (s == nullptr) continue;
      auto rkey = options_.remote->Rkey(s->arena().value_region().data());
      if (!rkey.empty()) entries.push_back({i, std::move(s), std::move(rkey)});
    }
  }
  const std::vector<uint8_t> addr = options_.remote ? options_.remote->WorkerAddress() : std::vector<uint8_t>{};
  w.Put<uint32_t>(static_cast<uint32_t>(addr.size()));
  w.PutBytes(addr.data(), addr.size());
  w.Put<uint32_t>(static_cast<uint32_t>(entries.size()));
  for (const auto& e : entries) {
    w.Put<uint32_t>(e.shard);
    w.Put<uint64_t>(e.s->first_row());
    w.Put<uint64_t>(e.s->num_rows());
    w.Put<uint64_t>(e.s->arena().layout().stride);
    w.Put<uint64_t>(e.s->cached() ? e.s->cache()->sets() : 0);
    w.Put<uint32_t>(e.s->cached() ? e.s->cache()->ways() : 0);
    w.Put<uint64_t>(reinterpret_cast<uintptr_t>(e.s->arena().value_region().data()));
    w.Put<uint32_t>(static_cast<uint32_t>(e.rkey.size()));
    w.PutBytes(e.rkey.data(), e.rkey.size());
  }
  // Then the lease word, if this node publishes one: base u64, rkey (readers without it read
  // on without a lease check).
  if (options_.remote != nullptr && options_.readable_until != nullptr) {
    const auto rkey = options_.remote->Rkey(options_.readable_until);
    if (!rkey.empty()) {
      w.Put<uint64_t>(reinterpret_cast<uintptr_t>(options_.readable_until));
      w.Put<uint32_t>(static_cast<uint32_t>(rkey.size()));
      w.PutBytes(rkey.data(), rkey.size());
    }
  }
  return Status::OK();
}

std::string Service::MetricsText() const {
  std::string m;
  auto line = [&](const std::string& s) { m += s + "\n"; };
  line("# HELP engram_requests_total Requests received, by type.");
  line("# TYPE engram_requests_total counter");
  for (uint16_t t = 1; t <= 10; ++t) {
    line(std::string("engram_requests_total{type=\"") + TypeName(t) + "\"} " + std::to_string(counters_.requests[t].load()));
  }
  line("# HELP engram_request_errors_total Requests answered with an error, by type.");
  line("# TYPE engram_request_errors_total counter");
  for (uint16_t t = 0; t <= 10; ++t) {
    line(std::string("engram_request_errors_total{type=\"") + TypeName(t) + "\"} " + std::to_string(counters_.errors[t].load()));
  }
  line("# TYPE engram_rows_pulled_total counter");
  line("engram_rows_pulled_total " + std::to_string(counters_.rows_pulled.load()));
  line("# TYPE engram_rows_pushed_total counter");
  line("engram_rows_pushed_total " + std::to_string(counters_.rows_pushed.load()));
  line("# TYPE engram_rows_put_total counter");
  line("engram_rows_put_total " + std::to_string(counters_.rows_put.load()));
  line("# HELP engram_duplicate_pushes_total Retransmitted pushes recognised and not applied again.");
  line("# TYPE engram_duplicate_pushes_total counter");
  line("engram_duplicate_pushes_total " + std::to_string(counters_.duplicate_pushes.load()));
  line("# HELP engram_push_sessions Client push sessions whose recent parts this node remembers (exactly-once).");
  line("# TYPE engram_push_sessions gauge");
  line("engram_push_sessions " + std::to_string(dedup_.clients()));
  line("# HELP engram_push_sessions_forgotten_total Push sessions forgotten after an hour without pushes.");
  line("# TYPE engram_push_sessions_forgotten_total counter");
  line("engram_push_sessions_forgotten_total " + std::to_string(dedup_.forgotten()));
  line("# HELP engram_table_rows_touched Rows materialised on this node.");
  line("# TYPE engram_table_rows_touched gauge");
  line("# HELP engram_table_bytes_per_row Bytes one materialised row costs (value slot + optimizer state).");
  line("# TYPE engram_table_bytes_per_row gauge");
  std::vector<std::pair<std::string, TableStats>> cached;
  for (const auto& name : registry_.List()) {
    auto t = registry_.Get(name);
    if (!t.ok()) continue;
    const TableStats s = (*t)->stats();
    line("engram_table_rows_touched{table=\"" + name + "\"} " + std::to_string(s.touched_rows));
    line("engram_table_bytes_per_row{table=\"" + name + "\"} " + std::to_string(s.bytes_per_row));
    if (s.cached) cached.emplace_back(name, s);
  }
  // Cold-tier tables: one group of lines per metric, as the exposition format wants.
  using Field = uint64_t (*)(const TableStats&);
  const std::pair<const char*, Field> families[] = {
      {"engram_cache_capacity_rows", [](const TableStats& t) { return t.cache.capacity; }},
      {"engram_cache_resident_rows", [](const TableStats& t) { return t.cache.resident; }},
      {"engram_cache_hits_total", [](const TableStats& t) { return t.cache.hits; }},
      {"engram_cache_misses_total", [](const TableStats& t) { return t.cache.misses; }},
      {"engram_cache_admitted_total", [](const TableStats& t) { return t.cache.admitted; }},
      {"engram_cache_rejected_total", [](const TableStats& t) { return t.cache.rejected; }},
      {"engram_cache_evictions_total", [](const TableStats& t) { return t.cache.evictions; }},
      {"engram_cold_rows_written_total", [](const TableStats& t) { return t.cold_puts; }},
      {"engram_cold_rows_read_total", [](const TableStats& t) { return t.cold_reads; }},
  };
  for (const auto& [family, field] : families) {
    if (cached.empty()) break;
    const std::string f = family;
    line("# TYPE " + f + (f.ends_with("_total") ? " counter" : " gauge"));
    for (const auto& [name, st] : cached) line(f + "{table=\"" + name + "\"} " + std::to_string(field(st)));
  }
  line("# TYPE engram_memory_budget_bytes gauge");
  line("engram_memory_budget_bytes " + std::to_string(options_.memory_budget));
  line("# TYPE engram_rows_bytes gauge");
  line("engram_rows_bytes " + std::to_string(registry_.TouchedBytes()));
  return m;
}

std::string Service::StatusJson() const {
  nlohmann::json j;
  j["node_id"] = options_.node_id;
  j["uptime_s"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
  j["protocol_version"] = wire::kProtocolVersion;
  j["memory_budget_bytes"] = options_.memory_budget;
  j["rows_bytes"] = registry_.TouchedBytes();
  j["tables"] = nlohmann::json::array();
  for (const auto& name : registry_.List()) {
    auto t = registry_.Get(name);
    if (!t.ok()) continue;
    const auto& s = (*t)->schema();
    const TableStats st = (*t)->stats();
    nlohmann::json cache = nullptr;
    if (st.cached) {
      cache = {{"capacity_rows", st.cache.capacity}, {"resident_rows", st.cache.resident},
               {"hits", st.cache.hits},           {"misses", st.cache.misses},
               {"admitted", st.cache.admitted},   {"rejected", st.cache.rejected},
               {"evictions", st.cache.evictions}, {"write_throughs", st.cache.write_throughs},
               {"cold_rows_written", st.cold_puts}, {"cold_rows_read", st.cold_reads}};
    }
    j["tables"].push_back({{"name", name},
                           {"rows", s.num_rows},
                           {"dim", s.dim},
                           {"dtype", DTypeName(s.dtype)},
                           {"optimizer", OptimizerName(s.optimizer.kind)},
                           {"epoch", (*t)->shard_map().epoch()},
                           {"shards", (*t)->shard_map().num_shards()},
                           {"local_shards", st.local_shards},
                           {"rows_touched", st.touched_rows},
                           {"bytes_per_row", st.bytes_per_row},
                           {"dram_bytes", s.dram_bytes},
                           {"cache", cache}});
  }
  j["rows_pulled"] = counters_.rows_pulled.load();
  j["rows_pushed"] = counters_.rows_pushed.load();
  j["duplicate_pushes"] = counters_.duplicate_pushes.load();
  return j.dump();
}

}  // namespace engram::ps
