// ShardMover: the move protocol (see the header) over the client's administrative calls.
#include "cluster/shard_mover.h"

#include <algorithm>
#include <chrono>
#include <map>
#include <random>
#include <thread>

namespace engram::cluster {
namespace {

std::vector<uint8_t> ShardPayload(const std::string& name, uint32_t shard) {
  std::vector<uint8_t> p;
  wire::Writer w(&p);
  w.PutString(name);
  w.Put<uint32_t>(shard);
  return p;
}

}  // namespace

ShardMover::ShardMover(client::Client* client, ClusterState* state) : client_(client), state_(state) {
  calls_.call = [client](uint32_t node, wire::MsgType type, const std::vector<uint8_t>& p) {
    return client->AdminCall(static_cast<int>(node), type, p);
  };
  calls_.address = [client](uint32_t node) -> StatusOr<std::string> {
    if (node >= client->num_servers()) return Status::InvalidArgument("no node " + std::to_string(node));
    return client->server_address(node);
  };
  calls_.nodes = [client] {  // The reachable ones: a node id without a daemon gets no map.
    std::vector<uint32_t> n;
    for (uint32_t i = 0; i < client->num_servers(); ++i) {
      if (client->reachable(i)) n.push_back(i);
    }
    return n;
  };
}

StatusOr<wire::TableInfo> ShardMover::Table(const std::string& name) {
  if (state_ != nullptr) {
    ENGRAM_ASSIGN_OR_RETURN(auto rec, state_->GetTable(name));
    if (!rec.has_value()) return Status::NotFound("no table named '" + name + "' in the cluster's etcd records");
    return rec->info;
  }
  if (client_ == nullptr) return Status::FailedPrecondition("a mover without a client needs the cluster's etcd state");
  return client_->DescribeTable(name);
}

Status ShardMover::Step(uint32_t node, wire::MsgType type, const std::string& name, uint32_t shard,
                        std::vector<uint8_t>* reply, const std::vector<uint8_t>& extra) {
  std::vector<uint8_t> p = ShardPayload(name, shard);
  p.insert(p.end(), extra.begin(), extra.end());
  ENGRAM_ASSIGN_OR_RETURN(auto r, calls_.call(node, type, p));
  if (reply != nullptr) *reply = std::move(r);
  return Status::OK();
}

Status ShardMover::OpStep(uint32_t node, wire::MsgType type, const std::string& name, uint32_t shard, uint64_t op,
                          const MoveOptions& options, std::vector<uint8_t>* reply) {
  std::vector<uint8_t> id;
  wire::Writer(&id).Put<uint64_t>(op);
  const auto deadline = std::chrono::steady_clock::now() + options.busy_wait;
  for (;;) {
    Status s = Step(node, type, name, shard, reply, id);
    const bool busy = s.IsUnavailable() && s.message().find("busy:") != std::string::npos;
    if (!busy || std::chrono::steady_clock::now() >= deadline) return s;
    if (options.cancel != nullptr && options.cancel->load()) return Status::Aborted("interrupted");
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

StatusOr<uint64_t> ShardMover::CopyChunk(uint32_t from, uint32_t to, const std::string& name, uint32_t shard,
                                         uint64_t cursor, uint32_t max_rows, bool dirty, uint64_t* rows) {
  if (!relay_) {  // The source sends the rows to the destination itself.
    std::vector<uint8_t> args;
    wire::Writer w(&args);
    ENGRAM_ASSIGN_OR_RETURN(std::string to_address, calls_.address(to));
    w.PutString(to_address);
    w.Put<uint64_t>(cursor);
    w.Put<uint32_t>(max_rows);
    w.Put<uint8_t>(dirty ? 1 : 0);
    std::vector<uint8_t> reply;
    Status s = Step(from, wire::MsgType::kShardPush, name, shard, &reply, args);
    if (s.ok()) {
      wire::Reader rd(reply.data(), reply.size());
      uint64_t next = 0;
      uint32_t n = 0;
      ENGRAM_RETURN_IF_ERROR(rd.Get(&next));
      ENGRAM_RETURN_IF_ERROR(rd.Get(&n));
      *rows += n;
      return next;
    }
    if (s.code() != Code::kFailedPrecondition) return s;
    relay_ = true;  // A source that cannot call its peers: relay through this process.
  }
  std::vector<uint8_t> args;
  wire::Writer w(&args);
  w.Put<uint64_t>(cursor);
  w.Put<uint32_t>(max_rows);
  w.Put<uint8_t>(dirty ? 1 : 0);
  std::vector<uint8_t> reply;
  ENGRAM_RETURN_IF_ERROR(Step(from, wire::MsgType::kShardRead, name, shard, &reply, args));
  wire::Reader rd(reply.data(), reply.size());
  uint64_t next = 0;
  uint32_t n = 0;
  ENGRAM_RETURN_IF_ERROR(rd.Get(&next));
  ENGRAM_RETURN_IF_ERROR(rd.Get(&n));
  if (n > 0) {
    // Re-encoded, not forwarded: arrays are aligned within a payload, and the prefixes differ.
    uint32_t vb = 0, sb = 0;
    ENGRAM_RETURN_IF_ERROR(rd.Get(&vb));
    ENGRAM_RETURN_IF_ERROR(rd.Get(&sb));
    if (n > rd.remaining() / (16 + size_t{vb} + sb)) return Status::DataLoss("malformed shard images from node " + std::to_string(from));
    std::vector<uint8_t> out = ShardPayload(name, shard);
    wire::Writer ow(&out);
    ow.Put<uint32_t>(n);
    ow.Put<uint32_t>(vb);
    ow.Put<uint32_t>(sb);
    for (uint32_t i = 0; i < n; ++i) {
      uint64_t row = 0, version = 0;
      const uint8_t *value = nullptr, *state = nullptr;
      ENGRAM_RETURN_IF_ERROR(wire::GetRowEntry(rd, &row, &version, &value, vb, &state, sb));
      wire::PutRowEntry(ow, row, version, value, vb, state, sb);
    }
    ENGRAM_RETURN_IF_ERROR(calls_.call(to, wire::MsgType::kShardWrite, out).status());
  }
  *rows += n;
  return next;
}

StatusOr<uint64_t> ShardMover::Move(const std::string& name, uint32_t shard, uint32_t to, const MoveOptions& options) {
  return MoveImpl(name, shard, to, options, /*as_backup=*/false);
}

StatusOr<uint64_t> ShardMover::AddBackup(const std::string& name, uint32_t shard, uint32_t to,
                                         const MoveOptions& options) {
  if (state_ == nullptr) return Status::FailedPrecondition("backups need the cluster's etcd state");
  return MoveImpl(name, shard, to, options, /*as_backup=*/true);
}

StatusOr<uint64_t> ShardMover::MoveImpl(const std::string& name, uint32_t shard, uint32_t to, const MoveOptions& options,
                                        bool as_backup) {
  // The etcd record's revision, for the compare-and-swap of step 6.
  int64_t revision = 0;
  wire::TableInfo info;
  if (state_ != nullptr) {
    ENGRAM_ASSIGN_OR_RETURN(auto rec, state_->GetTable(name));
    if (!rec.has_value()) return Status::NotFound("no table named '" + name + "' in the cluster's etcd records");
    info = rec->info;
    revision = rec->mod_revision;
  } else {
    ENGRAM_ASSIGN_OR_RETURN(info, Table(name));
  }
  if (shard >= info.owners.size()) {
    return Status::InvalidArgument("table '" + name + "' has " + std::to_string(info.owners.size()) + " shards; no shard " +
                                   std::to_string(shard));
  }
  {
    const auto nodes = calls_.nodes();
    if (std::find(nodes.begin(), nodes.end(), to) == nodes.end()) return Status::InvalidArgument("no node " + std::to_string(to));
  }
  const uint32_t from = info.owners[shard];
  if (as_backup) {
    if (from == to) return Status::InvalidArgument("a shard's backup cannot be its owner");
    if (!info.backups.empty() && info.backups[shard] != kNoNode) {
      return Status::FailedPrecondition("shard " + std::to_string(shard) + " of '" + name + "' has a backup already");
    }
  } else if (from == to) {
    return Finish(info, to);
  }
  MoveProgress pr{shard, from, to, 0, 0, 0, "copy"};
  ENGRAM_ASSIGN_OR_RETURN(auto map, ShardMap::Create(info.schema.num_rows, info.owners, info.epoch, info.backups));
  pr.shard_rows = map.Range(shard).count;
  auto report = [&](const char* phase) {
    pr.phase = phase;
    if (options.progress) options.progress(pr);
  };
  // This operation's id: its steps are refused while another operation holds the shard, and its
  // abort ends only its own state there.
  const uint64_t op = [] {
    std::random_device rd;
    std::mt19937_64 g((uint64_t{rd()} << 32) ^ rd() ^ static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()));
    uint64_t v = 0;
    while (v == 0) v = g();
    return v;
  }();
  MoveOptions once = options;  // Abort steps never wait for another operation.
  once.busy_wait = std::chrono::milliseconds(0);
  auto abort = [&](Status why) {
    OpStep(from, wire::MsgType::kShardAbort, name, shard, op, once).IgnoreError();
    OpStep(to, wire::MsgType::kShardAbort, name, shard, op, once).IgnoreError();
    return why.WithContext("moving shard " + std::to_string(shard) + " of '" + name + "' from node " +
                           std::to_string(from) + " to node " + std::to_string(to) + " (aborted; nothing changed)");
  };
  auto cancelled = [&] { return options.cancel != nullptr && options.cancel->load(); };
  ENGRAM_RETURN_IF_ERROR(SendStartingRecord(to, info));  // 0. Nothing to abort yet.
  if (Status s = OpStep(to, wire::MsgType::kShardPrepare, name, shard, op, options); !s.ok()) return abort(s);
  if (Status s = OpStep(from, wire::MsgType::kShardTrack, name, shard, op, options); !s.ok()) return abort(s);
  for (uint64_t cursor = 0; cursor != UINT64_MAX;) {  // 3. Bulk copy while writes continue.
    if (cancelled()) return abort(Status::Aborted("interrupted"));
    auto next = CopyChunk(from, to, name, shard, cursor, options.chunk_rows, false, &pr.rows_copied);
    if (!next.ok()) return abort(next.status());
    cursor = *next;
    pr.cursor = cursor == UINT64_MAX ? pr.shard_rows : cursor;
    report("copy");
  }
  if (cancelled()) return abort(Status::Aborted("interrupted"));
  std::vector<uint8_t> frozen;  // 4. Freeze; 5. the rows written during the copy.
  if (Status s = OpStep(from, wire::MsgType::kShardFreeze, name, shard, op, once, &frozen); !s.ok()) return abort(s);
  report("freeze");
  for (uint64_t cursor = 0; cursor != UINT64_MAX;) {
    auto next = CopyChunk(from, to, name, shard, cursor, options.chunk_rows, true, &pr.rows_copied);
    if (!next.ok()) return abort(next.status());
    cursor = *next;
  }
  if (Status s = Seal(from, to, name, shard, op, once); !s.ok()) return abort(s);
  report("delta");
  if (cancelled()) return abort(Status::Aborted("interrupted"));
  // 6. The new map, agreed in etcd first when there is a cluster.
  auto changed = [&](wire::TableInfo base) {
    base.epoch += 1;
    if (as_backup) {
      base.backups.resize(base.owners.size(), kNoNode);
      base.backups[shard] = to;
    } else {
      base.owners[shard] = to;
      // A shard moved onto its own backup's node loses that backup.
      if (!base.backups.empty() && base.backups[shard] == to) base.backups[shard] = kNoNode;
    }
    return base;
  };
  wire::TableInfo next = changed(info);
  if (state_ != nullptr) {
    // Other changes to the record (the leader re-replicating another shard) may come first:
    // the copy stays valid while this shard is frozen and still where it was, so apply this
    // change to the newer record.
    StatusOr<wire::TableInfo> rec = state_->SetMap(name, next.owners, next.backups, revision);
    for (int attempt = 0; attempt < 5 && rec.status().code() == Code::kAborted; ++attempt) {
      auto now = state_->GetTable(name);
      if (!now.ok() || !now->has_value()) break;
      const wire::TableInfo& cur = (*now)->info;
      const bool same_place = cur.owners.size() == info.owners.size() && cur.owners[shard] == from &&
                              (!as_backup || cur.backups.empty() || cur.backups[shard] == kNoNode);
      if (!same_place) break;
      next = changed(cur);
      rec = state_->SetMap(name, next.owners, next.backups, (*now)->mod_revision);
    }
    if (!rec.ok()) return abort(rec.status());
    next = *rec;
  }
  report("flip");
  // 7. Adopt: for a move the source first (no stale reads from it afterwards), then the
  // destination; for a new backup the backup first (its copy becomes the replica), then the
  // primary (which unfreezes and forwards to it from then on). Then the rest. From here on the
  // change stands; errors are reported, not undone.
  std::vector<uint8_t> p;
  wire::Writer w(&p);
  wire::PutTableInfo(w, next);
  std::vector<uint32_t> order = as_backup ? std::vector<uint32_t>{to, from} : std::vector<uint32_t>{from, to};
  for (uint32_t n : calls_.nodes()) {
    if (n != from && n != to) order.push_back(n);
  }
  Status first;
  for (uint32_t n : order) {
    auto r = calls_.call(n, wire::MsgType::kAdoptMap, p);
    if (!r.ok() && first.ok()) first = r.status().WithContext("node " + std::to_string(n) + " did not adopt epoch " +
                                                               std::to_string(next.epoch) + " (run the move again)");
  }
  ENGRAM_RETURN_IF_ERROR(first);
  report("done");
  return next.epoch;
}

Status ShardMover::SendStartingRecord(uint32_t to, const wire::TableInfo& info) {
  // A node that missed the record dropping it as the shard's backup ends the replica its primary
  // stopped feeding (the flip would keep it over the copy).
  std::vector<uint8_t> rec;
  wire::Writer w(&rec);
  wire::PutTableInfo(w, info);
  return calls_.call(to, wire::MsgType::kAdoptMap, rec).status().WithContext(
      "node " + std::to_string(to) + " cannot adopt epoch " + std::to_string(info.epoch) + " of '" + info.schema.name +
      "' (nothing changed)");
}

Status ShardMover::Seal(uint32_t from, uint32_t to, const std::string& name, uint32_t shard, uint64_t op,
                        const MoveOptions& once) {
  // The push parts applied to the shard on the source (final now): the destination answers
  // their retransmissions as duplicates once it owns the shard, and seals this operation's copy.
  std::vector<uint8_t> applied;
  ENGRAM_RETURN_IF_ERROR(Step(from, wire::MsgType::kShardAppliedRead, name, shard, &applied));
  std::vector<uint8_t> sealed;
  wire::Writer(&sealed).Put<uint64_t>(op);
  sealed.insert(sealed.end(), applied.begin(), applied.end());
  ENGRAM_RETURN_IF_ERROR(Step(to, wire::MsgType::kShardAppliedWrite, name, shard, nullptr, sealed));
  // Still this operation's freeze on the source (a driver paused long enough lost it to another
  // operation, which unfroze the source: the sealed copy may miss writes), right before the flip.
  return OpStep(from, wire::MsgType::kShardFreeze, name, shard, op, once);
}

StatusOr<uint64_t> ShardMover::Finish(const wire::TableInfo& info, uint32_t to) {
  // The shard is recorded on `to` already; a move whose driver stopped after its flip may have
  // left nodes on the older map. `to` first (it fails unless it holds the shard or a copy), so
  // no node gives its copy away before the shard's owner has it.
  std::vector<uint8_t> p;
  wire::Writer w(&p);
  wire::PutTableInfo(w, info);
  ENGRAM_RETURN_IF_ERROR(calls_.call(to, wire::MsgType::kAdoptMap, p).status().WithContext(
      "node " + std::to_string(to) + " cannot take the map that gives it the shard"));
  for (uint32_t n : calls_.nodes()) {
    if (n == to) continue;
    ENGRAM_RETURN_IF_ERROR(calls_.call(n, wire::MsgType::kAdoptMap, p).status().WithContext(
        "node " + std::to_string(n)));
  }
  return info.epoch;
}

std::vector<ShardMove> ShardMover::PlanDrain(const std::vector<uint32_t>& owners, uint32_t node,
                                             const std::vector<uint32_t>& nodes) {
  std::map<uint32_t, uint32_t> load;
  for (uint32_t n : nodes) {
    if (n != node) load[n] = 0;
  }
  if (load.empty()) return {};
  for (uint32_t o : owners) {
    if (load.count(o)) ++load[o];
  }
  std::vector<ShardMove> plan;
  for (uint32_t s = 0; s < owners.size(); ++s) {
    if (owners[s] != node) continue;
    auto least = std::min_element(load.begin(), load.end(), [](const auto& a, const auto& b) { return a.second < b.second; });
    plan.push_back({s, least->first});
    ++least->second;
  }
  return plan;
}

std::vector<ShardMove> ShardMover::PlanRebalance(const std::vector<uint32_t>& owners, const std::vector<uint32_t>& nodes) {
  std::map<uint32_t, std::vector<uint32_t>> held;  // Node -> its shards.
  for (uint32_t n : nodes) held[n];
  std::vector<ShardMove> plan;
  for (uint32_t s = 0; s < owners.size(); ++s) {
    if (held.count(owners[s])) {
      held[owners[s]].push_back(s);
    } else {
      plan.push_back({s, UINT32_MAX});  // On a node that is gone: placed below.
    }
  }
  if (held.empty()) return {};
  auto least = [&] {
    return std::min_element(held.begin(), held.end(), [](const auto& a, const auto& b) { return a.second.size() < b.second.size(); });
  };
  auto most = [&] {
    return std::max_element(held.begin(), held.end(), [](const auto& a, const auto& b) { return a.second.size() < b.second.size(); });
  };
  for (auto& m : plan) {
    auto l = least();
    m.to = l->first;
    l->second.push_back(m.shard);
  }
  for (;;) {
    auto hi = most();
    auto lo = least();
    if (hi->second.size() <= lo->second.size() + 1) break;
    const uint32_t s = hi->second.back();
    hi->second.pop_back();
    lo->second.push_back(s);
    plan.push_back({s, lo->first});
  }
  return plan;
}

}  // namespace engram::cluster
