// Repair plans of the placement leader: what a table's map becomes when nodes lose their leases
// (failover), and which shard gets a backup again next (re-replication). Pure functions of the
// records and the live node set; the leader (ps/server_main.cc) carries them out.
//
// Thread-safety: stateless.
#ifndef ENGRAM_CLUSTER_REPAIR_H_
#define ENGRAM_CLUSTER_REPAIR_H_

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "cluster/cluster_state.h"
#include "cluster/shard_map.h"
#include "engram/wire.h"

namespace engram::cluster {

struct FailoverPlan {
  std::vector<uint32_t> owners, backups;  // The new map (backups sized like owners).
  std::vector<uint32_t> dead;             // The nodes it takes shards from, ascending.
};

// The map of `info` with only the nodes in `up` holding leases: a primary without a lease is
// replaced by its backup if that one holds a lease, a backup without a lease is dropped.
// A dead primary without a live backup keeps its shard, which waits for the node to come back.
// nullopt if nothing changes.
std::optional<FailoverPlan> PlanFailover(const wire::TableInfo& info, const std::set<uint32_t>& up);

struct BackupPlan {
  std::string table;
  uint32_t shard = 0;
  uint32_t to = 0;  // The live node that gets the copy.
};

// The next shard of a replicated table (one with backups) to get a backup again: the first one,
// by table then shard, whose primary holds a lease and that has no backup. It goes to the live
// node other than its primary that backs the fewest shards of that table (the lowest id among
// equals). nullopt if there is none.
std::optional<BackupPlan> NextBackup(const std::vector<TableRecord>& tables, const std::set<uint32_t>& up);

}  // namespace engram::cluster

#endif  // ENGRAM_CLUSTER_REPAIR_H_
