// ShardMover: the move protocol (see the header) over the client's administrative calls.
#include "cluster/shard_mover.h"

#include <algorithm>
#include <map>

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

StatusOr<wire::TableInfo> ShardMover::Table(const std::string& name) {
  if (state_ != nullptr) {
    ENGRAM_ASSIGN_OR_RETURN(auto rec, state_->GetTable(name));
    if (!rec.has_value()) return Status::NotFound("no table named '" + name + "' in the cluster's etcd records");
    return rec->info;
  }
  return client_->DescribeTable(name);
}

Status ShardMover::Step(uint32_t node, wire::MsgType type, const std::string& name, uint32_t shard,
                        std::vector<uint8_t>* reply, const std::vector<uint8_t>& extra) {
  std::vector<uint8_t> p = ShardPayload(name, shard);
  p.insert(p.end(), extra.begin(), extra.end());
  ENGRAM_ASSIGN_OR_RETURN(auto r, client_->AdminCall(static_cast<int>(node), type, p));
  if (reply != nullptr) *reply = std::move(r);
  return Status::OK();
}

StatusOr<uint64_t> ShardMover::CopyChunk(uint32_t from, uint32_t to, const std::string& name, uint32_t shard,
                                         uint64_t cursor, uint32_t max_rows, bool dirty, uint64_t* rows) {
  if (!relay_) {  // The source sends the rows to the destination itself.
    std::vector<uint8_t> args;
    wire::Writer w(&args);
    w.PutString(client_->server_address(to));
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
      ENGRAM_RETURN_IF_ERROR(rd.Get(&row));
      ENGRAM_RETURN_IF_ERROR(rd.Get(&version));
      ENGRAM_RETURN_IF_ERROR(rd.GetSpan(vb, &value));
      if (sb > 0) ENGRAM_RETURN_IF_ERROR(rd.GetSpan(sb, &state));
      ow.Put<uint64_t>(row);
      ow.Put<uint64_t>(version);
      ow.PutBytes(value, vb);
      if (sb > 0) ow.PutBytes(state, sb);
    }
    ENGRAM_RETURN_IF_ERROR(client_->AdminCall(static_cast<int>(to), wire::MsgType::kShardWrite, out).status());
  }
  *rows += n;
  return next;
}

StatusOr<uint64_t> ShardMover::Move(const std::string& name, uint32_t shard, uint32_t to, const MoveOptions& options) {
  // The etcd record's revision, for the compare-and-swap of step 6.
  int64_t revision = 0;
  wire::TableInfo info;
  if (state_ != nullptr) {
    ENGRAM_ASSIGN_OR_RETURN(auto rec, state_->GetTable(name));
    if (!rec.has_value()) return Status::NotFound("no table named '" + name + "' in the cluster's etcd records");
    info = rec->info;
    revision = rec->mod_revision;
  } else {
    ENGRAM_ASSIGN_OR_RETURN(info, client_->DescribeTable(name));
  }
  if (shard >= info.owners.size()) {
    return Status::InvalidArgument("table '" + name + "' has " + std::to_string(info.owners.size()) + " shards; no shard " +
                                   std::to_string(shard));
  }
  if (to >= client_->num_servers()) return Status::InvalidArgument("no node " + std::to_string(to));
  const uint32_t from = info.owners[shard];
  if (from == to) return Finish(info, to);
  MoveProgress pr{shard, from, to, 0, 0, 0, "copy"};
  ENGRAM_ASSIGN_OR_RETURN(auto map, ShardMap::Create(info.schema.num_rows, info.owners, info.epoch, info.backups));
  pr.shard_rows = map.Range(shard).count;
  auto report = [&](const char* phase) {
    pr.phase = phase;
    if (options.progress) options.progress(pr);
  };
  auto abort = [&](Status why) {
    Step(from, wire::MsgType::kShardAbort, name, shard).IgnoreError();
    Step(to, wire::MsgType::kShardAbort, name, shard).IgnoreError();
    return why.WithContext("moving shard " + std::to_string(shard) + " of '" + name + "' from node " +
                           std::to_string(from) + " to node " + std::to_string(to) + " (aborted; nothing changed)");
  };
  auto cancelled = [&] { return options.cancel != nullptr && options.cancel->load(); };
  if (Status s = Step(to, wire::MsgType::kShardPrepare, name, shard); !s.ok()) return abort(s);
  if (Status s = Step(from, wire::MsgType::kShardTrack, name, shard); !s.ok()) return abort(s);
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
  if (Status s = Step(from, wire::MsgType::kShardFreeze, name, shard, &frozen); !s.ok()) return abort(s);
  report("freeze");
  for (uint64_t cursor = 0; cursor != UINT64_MAX;) {
    auto next = CopyChunk(from, to, name, shard, cursor, options.chunk_rows, true, &pr.rows_copied);
    if (!next.ok()) return abort(next.status());
    cursor = *next;
  }
  report("delta");
  if (cancelled()) return abort(Status::Aborted("interrupted"));
  // 6. The new map, agreed in etcd first when there is a cluster.
  wire::TableInfo next = info;
  next.owners[shard] = to;
  next.epoch = info.epoch + 1;
  // A shard moved onto its own backup's node loses that backup (re-replication is not built).
  if (!next.backups.empty() && next.backups[shard] == to) next.backups[shard] = kNoNode;
  if (state_ != nullptr) {
    auto rec = state_->SetMap(name, next.owners, next.backups, revision);
    if (!rec.ok()) return abort(rec.status());
    next.epoch = rec->epoch;
  }
  report("flip");
  // 7. Adopt: the source first (no stale reads from it afterwards), then the destination, then
  // the rest. From here on the move stands; errors are reported, not undone.
  std::vector<uint8_t> p;
  wire::Writer w(&p);
  wire::PutTableInfo(w, next);
  std::vector<uint32_t> order = {from, to};
  for (uint32_t n = 0; n < client_->num_servers(); ++n) {
    if (n != from && n != to) order.push_back(n);
  }
  Status first;
  for (uint32_t n : order) {
    auto r = client_->AdminCall(static_cast<int>(n), wire::MsgType::kAdoptMap, p);
    if (!r.ok() && first.ok()) first = r.status().WithContext("node " + std::to_string(n) + " did not adopt epoch " +
                                                               std::to_string(next.epoch) + " (run the move again)");
  }
  ENGRAM_RETURN_IF_ERROR(first);
  report("done");
  return next.epoch;
}

StatusOr<uint64_t> ShardMover::Finish(const wire::TableInfo& info, uint32_t to) {
  // The shard is recorded on `to` already; a move whose driver stopped after its flip may have
  // left nodes on the older map. `to` first (it fails unless it holds the shard or a copy), so
  // no node gives its copy away before the shard's owner has it.
  std::vector<uint8_t> p;
  wire::Writer w(&p);
  wire::PutTableInfo(w, info);
  ENGRAM_RETURN_IF_ERROR(client_->AdminCall(static_cast<int>(to), wire::MsgType::kAdoptMap, p).status().WithContext(
      "node " + std::to_string(to) + " cannot take the map that gives it the shard"));
  for (uint32_t n = 0; n < client_->num_servers(); ++n) {
    if (n == to) continue;
    ENGRAM_RETURN_IF_ERROR(client_->AdminCall(static_cast<int>(n), wire::MsgType::kAdoptMap, p).status().WithContext(
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
