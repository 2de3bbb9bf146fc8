// ShardMover: live moves of virtual shards between daemons, and the plans built from them
// (drain a node, rebalance a table), driven from outside the daemons (engramctl, tests).
//
// One move of shard s of table T from node S to node D, while clients keep pushing and pulling:
//   0. D: kAdoptMap       the record the move starts from (D ends a replica of s it kept after
//                         missing the record that dropped it as the backup).
//   1. D: kShardPrepare   an empty copy of s that D does not serve yet.
//   2. S: kShardTrack     S records every row written to s from now on.
//   3. copy               the rows of s, range by range: S sends them to D itself (kShardPush;
//                         or, for a source that cannot reach D, S kShardRead -> this process ->
//                         D kShardWrite). Each image carries its row version; D keeps the
//                         newer one and logs it.
//   4. S: kShardFreeze    S refuses writes to s (clients get Unavailable and retry) and waits
//                         for writes in flight; the rows written since step 2 are listed.
//   5. copy               those rows again (they are final now), and the push parts applied
//                         to s (kShardAppliedRead -> kShardAppliedWrite, naming the operation):
//                         D seals its copy (complete) and its exactly-once table then answers
//                         their retransmissions; S: kShardFreeze again, to check this
//                         operation still holds the freeze.
//   6. etcd               with a cluster: the table record's owner of s becomes D, epoch + 1,
//                         by compare-and-swap (a concurrent change aborts the move).
//   7. adopt              the new map, on S first (S retires its copy: one-sided readers of it
//                         fall back to S and learn the new map; S answers StaleShardMap), then
//                         on D (which serves s from now on), then on every other node.
// Any failure before step 6 aborts: S unfreezes, D drops its copy, nothing changed. Clients
// see a latency spike (retries during the freeze and the adopt), not an error, if their
// ClientOptions::max_attempts covers it. No acknowledged push is lost: writes to s are either
// applied on S before the freeze (and copied in step 3 or 5) or refused and retried on D.
//
// A driver that stops between steps 6 and 7 leaves the nodes on the old map with s frozen on S
// (writes to s are refused; nothing is lost): running the move again completes it (D first,
// which refuses if it lost its copy in a restart; S keeps the data until D has adopted).
// Daemons also adopt newer etcd records on their own, each follower pass; D installs only a
// replica of s or this operation's sealed copy, so that changes nothing above.
//
// Thread-safety: one ShardMover per thread; moves of different shards may run concurrently.
#ifndef ENGRAM_CLUSTER_SHARD_MOVER_H_
#define ENGRAM_CLUSTER_SHARD_MOVER_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "client/client.h"
#include "cluster/cluster_state.h"
#include "engram/status.h"
#include "engram/wire.h"

namespace engram::cluster {

struct MoveProgress {
  uint32_t shard = 0, from = 0, to = 0;
  uint64_t rows_copied = 0;  // Row images sent so far (steps 3 and 5).
  uint64_t cursor = 0, shard_rows = 0;  // Step 3's position in the shard's row range.
  const char* phase = "";  // "copy", "freeze", "delta", "flip", "done".
};

struct MoveOptions {
  uint32_t chunk_rows = 16384;  // Row range per kShardRead.
  std::function<void(const MoveProgress&)> progress;  // Called after each chunk and phase.
  const std::atomic<bool>* cancel = nullptr;          // Set: the move aborts before its flip.
  // How long to wait while another operation (a move, the leader's re-replication) holds the
  // shard on its source or destination, before giving up with Unavailable.
  std::chrono::milliseconds busy_wait{30000};
};

// A move of one shard: (shard, destination node).
struct ShardMove {
  uint32_t shard = 0, to = 0;
};

// How a mover reaches the nodes: a client's connections (engramctl, tests), or a daemon's
// peer calls (the failover leader re-replicating).
struct NodeCalls {
  std::function<StatusOr<std::vector<uint8_t>>(uint32_t node, wire::MsgType type, const std::vector<uint8_t>& payload)>
      call;
  std::function<StatusOr<std::string>(uint32_t node)> address;  // Its data address (kShardPush).
  std::function<std::vector<uint32_t>()> nodes;                 // Every node a new map goes to.
};

class ShardMover {
 public:
  // `client` connects to every node (position = node id). `state`: the cluster's etcd state,
  // or nullptr for daemons without etcd (the map then lives on the daemons only).
  ShardMover(client::Client* client, ClusterState* state);
  // For daemons: REQUIRES state != nullptr.
  ShardMover(NodeCalls calls, ClusterState* state) : calls_(std::move(calls)), state_(state) {}

  // Rows pass through this process instead of going from the source to the destination
  // directly (what happens anyway when a source cannot call its peers).
  void set_relay(bool relay) { relay_ = relay; }

  // The table as the cluster records it: etcd's record with a cluster, else node 0's.
  StatusOr<wire::TableInfo> Table(const std::string& name);

  // Moves shard `shard` of table `name` to node `to`. If the record already puts it there, makes
  // sure every node runs that map (completing a move whose driver stopped after its flip:
  // `to` first, which refuses unless it holds the shard). Returns the table's epoch.
  StatusOr<uint64_t> Move(const std::string& name, uint32_t shard, uint32_t to, const MoveOptions& options = {});

  // Gives shard `shard` of table `name` a backup on node `to` (re-replication after a failover):
  // the same copy as a move (the primary keeps serving; writes freeze only for the last rows),
  // then the record's backup becomes `to` (etcd required) and the primary forwards to it.
  StatusOr<uint64_t> AddBackup(const std::string& name, uint32_t shard, uint32_t to, const MoveOptions& options = {});

  // Plans: every shard on `node` to the other live nodes (least loaded first), or shards from
  // the most to the least loaded nodes among `nodes` until no node holds more than one shard
  // above the average. Load is counted in shards (a table's shards are the same size).
  static std::vector<ShardMove> PlanDrain(const std::vector<uint32_t>& owners, uint32_t node,
                                          const std::vector<uint32_t>& nodes);
  static std::vector<ShardMove> PlanRebalance(const std::vector<uint32_t>& owners, const std::vector<uint32_t>& nodes);

 private:
  Status Step(uint32_t node, wire::MsgType type, const std::string& name, uint32_t shard,
              std::vector<uint8_t>* reply = nullptr, const std::vector<uint8_t>& extra = {});
  // A step that names operation `op`, retried while another operation holds the shard there.
  Status OpStep(uint32_t node, wire::MsgType type, const std::string& name, uint32_t shard, uint64_t op,
                const MoveOptions& options, std::vector<uint8_t>* reply = nullptr);
  StatusOr<uint64_t> Finish(const wire::TableInfo& info, uint32_t to);
  StatusOr<uint64_t> MoveImpl(const std::string& name, uint32_t shard, uint32_t to, const MoveOptions& options,
                              bool as_backup);
  // Step 0: the destination adopts the record the move starts from.
  Status SendStartingRecord(uint32_t to, const wire::TableInfo& info);
  // Step 5's end: the source's applied parts to the destination, which seals `op`'s copy; then
  // the source's freeze checked again.
  Status Seal(uint32_t from, uint32_t to, const std::string& name, uint32_t shard, uint64_t op, const MoveOptions& once);
  // Copies one kShardRead reply's images to `to`; returns the reply's next cursor.
  StatusOr<uint64_t> CopyChunk(uint32_t from, uint32_t to, const std::string& name, uint32_t shard, uint64_t cursor,
                               uint32_t max_rows, bool dirty, uint64_t* rows);


  client::Client* client_ = nullptr;
  NodeCalls calls_;
  ClusterState* state_;
  bool relay_ = false;  // Rows pass through this process (sources that cannot reach their peers).
};

}  // namespace engram::cluster

#endif  // ENGRAM_CLUSTER_SHARD_MOVER_H_
