// ClusterState: table records and leader key in etcd, changed by compare-and-swap.
#include "cluster/cluster_state.h"

#include <algorithm>

#include "cluster/membership.h"

namespace engram::cluster {
namespace {

std::string Encode(const wire::TableInfo& info) {
  std::vector<uint8_t> buf;
  wire::Writer w(&buf);
  wire::PutTableInfo(w, info);
  return std::string(buf.begin(), buf.end());
}

StatusOr<TableRecord> Decode(const KeyValue& kv) {
  TableRecord r;
  wire::Reader rd(reinterpret_cast<const uint8_t*>(kv.value.data()), kv.value.size());
  ENGRAM_RETURN_IF_ERROR(wire::GetTableInfo(rd, &r.info).WithContext("table record " + kv.key));
  r.mod_revision = kv.mod_revision;
  return r;
}

}  // namespace

Status ClusterState::CreateTable(const wire::TableInfo& info) {
  ENGRAM_RETURN_IF_ERROR(info.schema.Validate());
  if (info.owners.empty()) return Status::InvalidArgument("a table needs at least one virtual shard");
  wire::TableInfo first = info;
  first.epoch = 1;
  ENGRAM_ASSIGN_OR_RETURN(bool created, etcd_->PutIf(TableKey(info.schema.name), Encode(first), 0));
  if (!created) return Status::AlreadyExists("table '" + info.schema.name + "' already exists in cluster '" + cluster_ + "'");
  return Status::OK();
}

StatusOr<std::optional<TableRecord>> ClusterState::GetTable(const std::string& name) {
  ENGRAM_ASSIGN_OR_RETURN(auto kv, etcd_->Get(TableKey(name)));
  if (!kv.has_value()) return std::optional<TableRecord>();
  ENGRAM_ASSIGN_OR_RETURN(TableRecord r, Decode(*kv));
  return std::optional<TableRecord>(std::move(r));
}

StatusOr<std::vector<TableRecord>> ClusterState::ListTables() {
  ENGRAM_ASSIGN_OR_RETURN(auto kvs, etcd_->Prefix("/engram/" + cluster_ + "/tables/"));
  std::vector<TableRecord> out;
  for (const auto& kv : kvs) {
    ENGRAM_ASSIGN_OR_RETURN(TableRecord r, Decode(kv));
    out.push_back(std::move(r));
  }
  return out;
}

StatusOr<uint64_t> ClusterState::SetOwners(const std::string& name, const std::vector<uint32_t>& owners,
                                           int64_t expected_mod_revision) {
  ENGRAM_ASSIGN_OR_RETURN(auto current, GetTable(name));
  if (!current.has_value()) return Status::NotFound("no table named '" + name + "' in cluster '" + cluster_ + "'");
  if (current->mod_revision != expected_mod_revision) {
    return Status::Aborted("table '" + name + "' changed since it was read (now at epoch " +
                           std::to_string(current->info.epoch) + "); read it again");
  }
  if (owners.size() != current->info.owners.size()) {
    return Status::InvalidArgument("table '" + name + "' has " + std::to_string(current->info.owners.size()) +
                                   " virtual shards, not " + std::to_string(owners.size()));
  }
  wire::TableInfo next = current->info;
  next.owners = owners;
  next.epoch = current->info.epoch + 1;
  ENGRAM_ASSIGN_OR_RETURN(bool set, etcd_->PutIf(TableKey(name), Encode(next), expected_mod_revision));
  if (!set) return Status::Aborted("table '" + name + "' changed concurrently; read it again");
  return next.epoch;
}

StatusOr<wire::TableInfo> ClusterState::SetMap(const std::string& name, const std::vector<uint32_t>& owners,
                                               const std::vector<uint32_t>& backups, int64_t expected_mod_revision,
                                               const std::vector<uint32_t>& dead_nodes) {
  ENGRAM_ASSIGN_OR_RETURN(auto current, GetTable(name));
  if (!current.has_value()) return Status::NotFound("no table named '" + name + "' in cluster '" + cluster_ + "'");
  if (current->mod_revision != expected_mod_revision) {
    return Status::Aborted("table '" + name + "' changed since it was read; read it again");
  }
  wire::TableInfo next = current->info;
  next.owners = owners;
  next.backups = backups;
  next.epoch = current->info.epoch + 1;
  std::vector<std::string> absent;
  for (uint32_t n : dead_nodes) absent.push_back(NodeKey(n));
  ENGRAM_ASSIGN_OR_RETURN(bool set, etcd_->PutIf(TableKey(name), Encode(next), expected_mod_revision, 0, absent));
  if (set) return next;
  for (uint32_t n : dead_nodes) {
    ENGRAM_ASSIGN_OR_RETURN(auto kv, etcd_->Get(NodeKey(n)));
    if (kv.has_value()) {
      return Status::FailedPrecondition("node " + std::to_string(n) + " registered again; table '" + name +
                                        "' keeps its shards there");
    }
  }
  return Status::Aborted("table '" + name + "' changed concurrently; read it again");
}

std::string ClusterState::NodeKey(uint32_t node) const { return Membership::NodesPrefix(cluster_) + std::to_string(node); }

Status ClusterState::DropTable(const std::string& name) {
  ENGRAM_ASSIGN_OR_RETURN(bool existed, etcd_->Delete(TableKey(name)));
  if (!existed) return Status::NotFound("no table named '" + name + "' in cluster '" + cluster_ + "'");
  return Status::OK();
}

StatusOr<bool> ClusterState::TryLead(uint32_t node_id, int64_t lease) {
  ENGRAM_ASSIGN_OR_RETURN(bool took, etcd_->PutIf(LeaderKey(), std::to_string(node_id), 0, lease));
  if (took) return true;
  ENGRAM_ASSIGN_OR_RETURN(auto leader, Leader());
  return leader.has_value() && *leader == node_id;
}

StatusOr<std::optional<uint32_t>> ClusterState::Leader() {
  ENGRAM_ASSIGN_OR_RETURN(auto kv, etcd_->Get(LeaderKey()));
  if (!kv.has_value()) return std::optional<uint32_t>();
  try {
    return std::optional<uint32_t>(static_cast<uint32_t>(std::stoul(kv->value)));
  } catch (const std::exception&) {
    return Status::DataLoss("leader key holds '" + kv->value + "', not a node id");
  }
}

StatusOr<std::vector<std::string>> DiscoverServers(EtcdClient& etcd, const std::string& cluster) {
  ENGRAM_ASSIGN_OR_RETURN(auto nodes, Membership::List(etcd, cluster));
  if (nodes.empty()) return Status::Unavailable("cluster '" + cluster + "' has no live daemon in etcd " + etcd.endpoint());
  std::vector<std::string> servers;
  for (const auto& n : nodes) {
    if (n.node_id >= 1024) return Status::FailedPrecondition("cluster '" + cluster + "': node id " + std::to_string(n.node_id) + " is beyond 1023");
    servers.resize(std::max<size_t>(servers.size(), n.node_id + 1));  // Node ids without a daemon stay "".
    servers[n.node_id] = n.data_address;
  }
  return servers;
}

}  // namespace engram::cluster
