// ClusterState: the agreed state of an engram-ps cluster, kept in etcd (never in one daemon's
// memory), and the placement leader's election.
//
// Keys under /engram/<cluster>/:
//   tables/<name>  the table's TableInfo (schema, shard map epoch, owner per virtual shard) in
//                  the wire encoding (include/engram/wire.h). Every change is a compare-and-swap
//                  on the record's etcd mod revision and raises the epoch by one, so two
//                  concurrent changes cannot both win and clients can tell maps apart.
//   leader         the node id of the placement leader, attached to that node's lease: when
//                  the leader dies its lease expires, the key goes, and another node takes it.
//
// Thread-safety: as thread-safe as the EtcdClient (it is).
#ifndef ENGRAM_CLUSTER_CLUSTER_STATE_H_
#define ENGRAM_CLUSTER_CLUSTER_STATE_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "cluster/etcd_client.h"
#include "engram/status.h"
#include "engram/wire.h"

namespace engram::cluster {

struct TableRecord {
  wire::TableInfo info;
  int64_t mod_revision = 0;  // For the compare-and-swap of the next change.
};

class ClusterState {
 public:
  ClusterState(EtcdClient* etcd, std::string cluster) : etcd_(etcd), cluster_(std::move(cluster)) {}

  // Records a new table at epoch 1. AlreadyExists if the name is taken.
  Status CreateTable(const wire::TableInfo& info);
  StatusOr<std::optional<TableRecord>> GetTable(const std::string& name);
  StatusOr<std::vector<TableRecord>> ListTables();
  // Places the table's shards on `owners` (one node id per virtual shard), raising the epoch,
  // if the record is still the one read at `expected_mod_revision`. Aborted if another change
  // came first (read again and retry); NotFound if the table is gone. Returns the new epoch.
  StatusOr<uint64_t> SetOwners(const std::string& name, const std::vector<uint32_t>& owners,
                               int64_t expected_mod_revision);
  // SetOwners for owners and backups together (failover: a backup promoted, a dead backup
  // dropped). Returns the new record. With `dead_nodes`, the change is made only while none of
  // them is registered (FailedPrecondition otherwise): a failover decided on a membership list
  // read before a node registered again must not take that node's shards, for the node caught
  // up with the records when it registered and takes writes on what they gave it.
  StatusOr<wire::TableInfo> SetMap(const std::string& name, const std::vector<uint32_t>& owners,
                                   const std::vector<uint32_t>& backups, int64_t expected_mod_revision,
                                   const std::vector<uint32_t>& dead_nodes = {});
  Status DropTable(const std::string& name);

  // Takes the leadership for `node_id` under `lease` if nobody holds it; returns whether this
  // node is the leader now (also when it already was).
  StatusOr<bool> TryLead(uint32_t node_id, int64_t lease);
  // The current leader, if any.
  StatusOr<std::optional<uint32_t>> Leader();

  std::string TableKey(const std::string& name) const { return "/engram/" + cluster_ + "/tables/" + name; }
  std::string LeaderKey() const { return "/engram/" + cluster_ + "/leader"; }
  // Membership's registration key of a node (cluster/membership.h).
  std::string NodeKey(uint32_t node) const;

 private:
  EtcdClient* etcd_;
  const std::string cluster_;
};

// The data addresses of the cluster's live daemons, entry i for node i: the server list a
// client connects to (position = node id). A node id below the highest live one with no live
// daemon (it is down) gets "" (ClientOptions: calls to it fail; the rest is used). Unavailable
// without live nodes.
StatusOr<std::vector<std::string>> DiscoverServers(EtcdClient& etcd, const std::string& cluster);

}  // namespace engram::cluster

#endif  // ENGRAM_CLUSTER_CLUSTER_STATE_H_
