// What a restarted daemon gives up before it serves anything: the shard copies it may have lost
// or that may lag their other copy.
//
// A daemon killed and started again comes back while its old key may still be registered (its
// lease has not expired), so the leader never fails its shards over: without this step it would
// recreate them empty (no --data_dir) and serve them. With a data directory it recovers what its
// log holds, but a backup may hold more (records applied there while this node's copy was still
// in memory, never acknowledged, under row versions this node would reissue for other
// gradients), and with async durability or a damaged log it may have lost acknowledged writes.
// So a restarted node keeps only what no other copy can serve better:
//   - a shard it owns whose backup holds a lease goes to that backup (which applied every push
//     acknowledged to a client), and the shard has no backup until re-replication copies it anew;
//   - its place as a backup is given up everywhere (its replica is rebuilt by re-replication);
//   - a shard it owns without a live backup stays: with --data_dir it recovered what its log
//     holds; without, its rows are gone with every copy of them (reported as kept).
// (Keeping a durable node's shards and dropping their backups instead was tried: the backup's
// exactly-once entries outlive its replica, and a later move of the shard to it would answer a
// resent push the owner never logged as a duplicate.)
//
// Thread-safety: stateless functions; StepDownOnRestart blocks on etcd.
#ifndef ENGRAM_CLUSTER_REJOIN_H_
#define ENGRAM_CLUSTER_REJOIN_H_

#include <cstdint>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "cluster/cluster_state.h"
#include "cluster/shard_map.h"
#include "engram/status.h"
#include "engram/wire.h"

namespace engram::cluster {

struct RejoinPlan {
  std::vector<uint32_t> owners, backups;  // The new map (backups sized like owners).
  std::vector<uint32_t> handed_off;       // Shards this node owned that go to their backups.
  std::vector<uint32_t> dropped;          // Shards this node backed up.
  std::vector<uint32_t> kept;             // Shards this node owns with no live backup.
  // Whether the map changes (shards it keeps with no backup change nothing).
  bool changes() const { return !handed_off.empty() || !dropped.empty(); }
};

// The map of `info` once node `self` gave up what it must on restarting (see above); `up` holds
// the nodes with leases (`self` in it is ignored: that may be its previous process's key).
RejoinPlan PlanRejoin(const wire::TableInfo& info, uint32_t self, const std::set<uint32_t>& up);

struct RejoinOutcome {
  std::string table;
  uint64_t epoch = 0;  // Of the record after the step down (unchanged if nothing was given up).
  std::vector<uint32_t> handed_off, dropped, kept;
};

// Carries out PlanRejoin on every table of the cluster's records (compare-and-swap, read again
// when another change came first) and hands each new record to `announce` (the caller sends it
// to the live nodes). Call before registering. Returns one outcome per table that names `self`.
StatusOr<std::vector<RejoinOutcome>> StepDownOnRestart(ClusterState& state, const std::set<uint32_t>& up, uint32_t self,
                                                       const std::function<void(const wire::TableInfo&)>& announce);

}  // namespace engram::cluster

#endif  // ENGRAM_CLUSTER_REJOIN_H_
