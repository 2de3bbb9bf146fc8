// TableRegistry: the tables a server holds, and Table: one table's locally owned shards.
//
// Server logic without the network: the transport (next issue) decodes a request, looks the
// table up here and calls Pull/Push. A Table routes each row to its shard through the table's
// ShardMap; a batch is validated as a whole (row ranges, shard ownership, finite gradients)
// before any shard changes, so a refused request changes nothing.
//
// Thread-safety: all methods are thread-safe. Tables are shared_ptr: a request holding one
// finishes safely even if the table is dropped meanwhile.
#ifndef ENGRAM_PS_TABLE_REGISTRY_H_
#define ENGRAM_PS_TABLE_REGISTRY_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <unordered_set>
#include <span>
#include <string>
#include <vector>

#include "cluster/shard_map.h"
#include "engram/fast_mod.h"
#include "engram/status.h"
#include "engram/table.h"
#include "engram/wire.h"
#include "storage/shard.h"

namespace engram::ps {

struct TableStats {
  uint64_t touched_rows = 0;
  uint64_t bytes_per_row = 0;
  uint32_t local_shards = 0;
  bool cached = false;            // Some rows live in the cold tier.
  storage::RowCacheStats cache;   // Summed over the cached shards.
  uint64_t cold_puts = 0, cold_reads = 0;
};

// Durability hook of a write: `sink` receives every changed row's after-image while the row is
// held, and `logged()` runs once all rows are applied, still under the write locks of the
// shards involved (it appends the write-ahead log record), so each shard's records are in the
// log in the order its writes were applied. A null hook: no locks, no log.
struct WriteLog {
  storage::RowImageSink* sink = nullptr;
  std::function<Status()> logged;
  // Replication: called after `logged`, still under the write locks, once per touched shard
  // that has a backup, with the kReplicate payload of what this write did to that shard (so a
  // backup receives each shard's writes in apply order). An error fails the write, whose rows
  // stay applied (and logged) here. `client`/`seq` identify the push to the backup.
  std::function<Status(const std::vector<uint32_t>& shards, uint32_t backup, std::vector<uint8_t> payload)> replicate;
  uint64_t client = 0, seq = 0;
};

// A shared mutex under which an exclusive locker cannot starve: while it waits, new shared
// lockers queue behind it (glibc's rwlock prefers readers, and pulls never stop).
class WriterPreferringSharedMutex {
 public:
  void lock() {
    std::lock_guard<std::mutex> g(gate_);
    rw_.lock();
  }
  void unlock() { rw_.unlock(); }
  void lock_shared() {
    { std::lock_guard<std::mutex> g(gate_); }
    rw_.lock_shared();
  }
  void unlock_shared() { rw_.unlock_shared(); }
  // False at once while an exclusive locker holds or waits for the lock.
  bool try_lock_shared() {
    std::unique_lock<std::mutex> g(gate_, std::try_to_lock);
    return g.owns_lock() && rw_.try_lock_shared();
  }

 private:
  std::mutex gate_;
  std::shared_mutex rw_;
};

// One shard image as moves carry it (value at rest and optimizer state, with the row's version).
struct RowImage {
  uint64_t row = 0, version = 0;
  std::vector<uint8_t> value, state;
};

class Table {
 public:
  // Creates the shards of `map` owned by `node_id`. `incarnation` tells this table apart from
  // an earlier one of the same name in the write-ahead log.
  // A schema with dram_bytes > 0 keeps the rows beyond it in a cold tier under `cold_dir`
  // (FailedPrecondition when empty: the server has no data directory).
  static StatusOr<std::shared_ptr<Table>> Create(const TableSchema& schema, cluster::ShardMap map,
                                                 uint32_t node_id, const storage::ShardOptions& options,
                                                 uint64_t incarnation = 0, const std::string& cold_dir = "");
  uint64_t incarnation() const { return incarnation_; }

  const TableSchema& schema() const { return schema_; }
  // The current shard map (a copy: moves replace it).
  cluster::ShardMap shard_map() const;
  uint64_t epoch() const { return epoch_.load(std::memory_order_acquire); }
  // Whether some shard of the table has a backup (writes then go through WriteLog::replicate).
  bool replicated() const { return replicated_.load(std::memory_order_acquire); }
  uint32_t num_shards() const { return num_shards_; }
  // The shard of a row (REQUIRES: row < num_rows), and the shards `rows` fall in (sorted,
  // distinct; rows beyond the table are left out). A row's shard never changes.
  uint32_t ShardOf(uint64_t row) const { return static_cast<uint32_t>(div_.Div(row)); }
  std::vector<uint32_t> ShardsOf(std::span<const uint64_t> rows) const;
  uint32_t node_id() const { return node_id_; }
  TableStats stats() const;
  // The local shard, or nullptr when another node owns it.
  std::shared_ptr<const storage::Shard> shard(uint32_t index) const;
  // The shards a checkpoint must copy: the local ones and those being moved here.
  std::vector<std::shared_ptr<const storage::Shard>> CheckpointShards() const;

  // Values at rest of `rows`, packed in request order. OutOfRange for a row outside the
  // table; FailedPrecondition for a row whose shard is not on this node; StaleShardMap when
  // `epoch` (0: not checked) is not the table's. With `any_copy`, this node's backup copy of a
  // shard serves too (it holds every acknowledged write), and a shard of which this node has
  // no copy is Unavailable (retry: the client's view of the map is moving).
  // With `would_block` set, the call never waits for the table's map lock: while a map change
  // holds it or waits for it (behind writes waiting on a slow backup), it sets *would_block and
  // returns Unavailable at once (an I/O thread hands the pull to a worker instead).
  Status Pull(std::span<const uint64_t> rows, uint8_t* out /* (n, value_bytes) */, uint64_t epoch = 0,
              bool any_copy = false, bool* would_block = nullptr) const;
  // Gradients for `rows` (f32, dim each); duplicates summed; all-or-nothing validation.
  // Unavailable (retry) while a shard it touches is frozen for a move.
  Status Push(std::span<const uint64_t> rows, const float* grads /* (n, dim) */, const WriteLog* log = nullptr,
              uint64_t epoch = 0);
  // Overwrites rows with values at rest.
  Status Put(std::span<const uint64_t> rows, const uint8_t* values /* (n, value_bytes) */,
             const WriteLog* log = nullptr, uint64_t epoch = 0);
  // Recovery: a logged after-image (see storage::Shard::Restore). Rows of shards this node does
  // not hold are skipped (OK).
  Status Restore(uint64_t row, uint64_t version, const uint8_t* value, const uint8_t* state);
  // Recovery: a logged optimizer step (see storage::Shard::ReplayGradient); rows of shards this
  // node does not hold are skipped (OK).
  Status ReplayGradient(uint64_t row, uint64_t version, const float* grad);
  // Rewrites a whole row image (see storage::Shard::Rewrite); rows of shards this node does not
  // hold are skipped (OK). REQUIRES: the caller holds LockWrites() (and not the map lock).
  Status Rewrite(uint64_t row, const uint8_t* value, const uint8_t* state, storage::RowImageSink* sink);
  // Excludes every logged write of this table while the returned locks live (checkpoints).
  std::vector<std::unique_lock<std::mutex>> LockWrites() const;
  // The map, for a holder of LockWrites(): AdoptMap changes it only while holding them, and
  // shard_map() (which takes the map lock) would invert the lock order there.
  const cluster::ShardMap& map_under_write_locks() const { return map_; }
  const storage::Shard* shard_under_write_locks(uint32_t s) const { return s < shards_.size() ? shards_[s].get() : nullptr; }
  // The table was dropped: its cold tier's files go when the last reference does.
  void MarkDropped();

  // A backup applying its primary's kReplicate payload (after the table name, client and seq were
  // read): every block's rows, in order, on this node's replicas, each reported to `sink`; all
  // blocks are checked first. FailedPrecondition if this node holds no replica of a shard;
  // DataLoss on a gap. `shards` (if set) receives the replica's shards before any row changes;
  // `applied` (if set) runs once every row is applied, still under the shards' write locks (the
  // exactly-once entry and the log record: a promotion or a checkpoint then sees the rows and
  // the entry together, and the log holds each shard's records in apply order); its error fails
  // the call, with the rows applied.
  Status ApplyReplica(wire::Reader& r, storage::RowImageSink* sink, std::vector<uint32_t>* shards = nullptr,
                      const std::function<Status()>& applied = nullptr);

  // Live shard moves (ps/service.h documents the protocol). On the node a shard moves to:
  // Each step names its operation (`op`, nonzero, chosen by the move's driver): one operation
  // at a time per shard and direction. Another operation's steps get Unavailable ("busy: ...")
  // until that one ends (adopted or aborted) or has been idle for kMoveIdleTakeover, after which
  // its driver is presumed dead and a new operation takes its state over (so a driver that died
  // after freezing does not leave the shard frozen for good).
  static constexpr std::chrono::seconds kMoveIdleTakeover{30};
  // PrepareIncoming creates an empty, unserved copy (OK again for the same op: a retry);
  // WriteIncoming fills it with images (newer versions win), reporting each to `sink` (the
  // write-ahead log).
  Status PrepareIncoming(uint32_t shard, uint64_t op);
  Status WriteIncoming(uint32_t shard, const std::vector<RowImage>& images, storage::RowImageSink* sink);
  // Operation `op`'s incoming copy is complete: its source is frozen and every row written there
  // since the copy began has been written here (the driver's last step before the flip). Only a
  // sealed copy is installed by a map that gives this node the shard without a replica of it,
  // or makes it a new backup without one; a failover mid-copy promotes the replica instead. (A
  // seal stays valid: only its own operation's flip can give this node the shard without a
  // replica, and that driver checks its freeze still holds right before the flip; a stale seal
  // would wedge a flip already recorded, which the driver's rerun must be able to finish.)
  // FailedPrecondition unless `op` made the incoming copy.
  Status SealIncoming(uint32_t shard, uint64_t op);
  // On the node a shard moves from: TrackOutgoing starts recording the rows written to it;
  // FreezeOutgoing refuses its writes from now on (Unavailable: clients retry), waits for
  // writes in flight and returns how many rows were written since tracking began.
  Status TrackOutgoing(uint32_t shard, uint64_t op);
  StatusOr<uint64_t> FreezeOutgoing(uint32_t shard, uint64_t op);
  // Images of an outgoing shard: with `dirty` false the touched rows in [cursor, cursor +
  // max_rows) of the shard's range; with `dirty` the frozen rows list from index cursor on, at
  // most max_rows. Returns the next cursor (UINT64_MAX: done).
  StatusOr<uint64_t> ReadOutgoing(uint32_t shard, uint64_t cursor, uint32_t max_rows, bool dirty,
                                  std::vector<RowImage>* out) const;
  // Installs a newer map: shards this node gains come from its replica (a promotion, or a move
  // onto the backup's node) or else from a sealed incoming copy (FailedPrecondition if it has
  // neither: nothing changes), shards it loses are retired (one-sided readers
  // fall back to the server) and dropped; the move state of a shard ends when it leaves this node
  // or gains a new backup (the two kinds of flip), and an incoming copy ends when it is installed
  // or when this node gains the shard from its replica (a shard it owns cannot be moved to it);
  // a backup merely dropped from the map ends nothing (a move of that shard may be under way).
  // OK if this map is already installed or older than the installed one (maps come from one
  // linear history, so a newer one holds every change of an older); FailedPrecondition for
  // another map of the same epoch.
  Status AdoptMap(cluster::ShardMap map);
  // Ends operation `op` on `shard`, which will not complete: unfreezes and stops tracking it if
  // `op` tracks it, drops the incoming copy if `op` made it. Another operation's state stays.
  void AbortMove(uint32_t shard, uint64_t op);
  // Whether a shard of this table is being moved away (restores refuse to run meanwhile: their
  // rewrites would miss the copy).
  bool moving() const { return moves_.load(std::memory_order_acquire) > 0; }
  // A restore in progress: until EndRestore, new move and re-replication operations of this
  // table's shards are told busy (a backup copied now would miss the restore). FailedPrecondition
  // if a shard is being moved or copied from this node, or another restore runs.
  Status BeginRestore();
  void EndRestore() { restoring_.store(false, std::memory_order_release); }

 private:
  Table(TableSchema schema, cluster::ShardMap map, uint32_t node_id, storage::ShardOptions options,
        std::string cold_dir, std::unique_ptr<storage::ColdStore> cold,
        std::vector<std::shared_ptr<storage::Shard>> shards, std::vector<std::shared_ptr<storage::Shard>> replicas,
        uint64_t incarnation);
  // REQUIRES: map_mu_ held. The shard or replica holding `row` here, or nullptr.
  storage::Shard* Holder(uint64_t row) const;
  // A write's kReplicate payloads, one per backup node.
  struct ReplicaPayloads {
    struct Payload {
      std::vector<uint8_t> bytes;
      size_t count_at = 0;
      std::vector<uint32_t> shards;
    };
    std::map<uint32_t, Payload> by_node;
    // The payload for `node`, with its header written on first use and `shard` noted.
    std::vector<uint8_t>* Block(const Table& t, const WriteLog& log, uint32_t node, uint32_t shard);
  };
  // REQUIRES: map_mu_ held and the write locks of the touched shards. Sends each backup node its
  // payload.
  Status Replicate(const WriteLog& log, ReplicaPayloads& payloads) const;
  static StatusOr<std::unique_ptr<storage::ColdStore>> OpenColdStore(const TableSchema& schema,
                                                                     const std::string& cold_dir, uint64_t incarnation);
  // Locks the write mutexes of the shards in `by_shard` that have rows, in ascending order.
  std::vector<std::unique_lock<std::mutex>> LockShards(const std::vector<std::vector<uint32_t>>& by_shard) const;
  // REQUIRES: map_mu_ held (shared). StaleShardMap if `epoch` is set and not the map's.
  Status CheckEpoch(uint64_t epoch) const;
  // REQUIRES: map_mu_ held (shared) and the write locks of `by_shard`. Unavailable if one of its
  // shards is frozen; records the rows of tracked shards.
  Status CheckFrozenAndTrack(std::span<const uint64_t> rows, const std::vector<std::vector<uint32_t>>& by_shard);

  // The local shard holding every row of `rows`, or nullptr if they span shards (or are bad).
  storage::Shard* SingleLocalShard(std::span<const uint64_t> rows) const;
  // Groups row indexes by shard; fails on rows outside the table or on non-local shards.
  Status Route(std::span<const uint64_t> rows, std::vector<std::vector<uint32_t>>* by_shard, bool any_copy = false) const;
  // The copy of shard `s` a read uses: this node's own, else (with `any_copy`) its backup copy.
  const storage::Shard* ReadCopy(uint32_t s, bool any_copy) const {
    return shards_[s] ? shards_[s].get() : any_copy ? replicas_[s].get() : nullptr;
  }

  const TableSchema schema_;
  const uint32_t node_id_;
  const uint32_t num_shards_;
  const FastMod64 div_;  // Rows per shard: the map's, whatever its epoch.
  const storage::ShardOptions shard_options_;  // For shards created by moves.
  const std::string cold_dir_;
  // Shared by the cached shards; outlives them. Opened at creation or by the first incoming
  // shard that needs it (under map_mu_ exclusive); never replaced.
  std::unique_ptr<storage::ColdStore> cold_;
  // Shared by every request for its whole duration; exclusive for map changes and move state.
  mutable WriterPreferringSharedMutex map_mu_;
  cluster::ShardMap map_;                                   // GUARDED_BY(map_mu_)
  std::vector<std::shared_ptr<storage::Shard>> shards_;    // GUARDED_BY(map_mu_); null if not local.
  std::vector<std::shared_ptr<storage::Shard>> incoming_;  // GUARDED_BY(map_mu_)
  std::vector<std::shared_ptr<storage::Shard>> replicas_;  // GUARDED_BY(map_mu_): shards this node backs up.
  std::atomic<uint64_t> epoch_;
  std::atomic<bool> replicated_{false};
  std::unique_ptr<std::mutex[]> write_mu_;  // Per shard: orders logged writes with their log records.
  // Outgoing moves. `moves_` changes only under map_mu_ exclusive, so a write that saw 0 under
  // the shared lock cannot race with a move starting; it rises also under the shard's write
  // mutex, so a restore (which holds every write mutex, not the map lock) sees it.
  std::atomic<int> moves_{0};
  std::atomic<bool> restoring_{false};  // Set under map_mu_ exclusive (TrackOutgoing reads it there).
  std::unique_ptr<std::atomic<bool>[]> frozen_;         // Per shard.
  std::vector<bool> tracking_;                          // GUARDED_BY(map_mu_)
  // The operation that tracks a shard (outgoing) or made its incoming copy, and when it last
  // took a step (steady-clock ms, for kMoveIdleTakeover).
  std::vector<uint64_t> out_op_, in_op_;                // GUARDED_BY(map_mu_)
  std::vector<bool> in_sealed_;                         // GUARDED_BY(map_mu_): see SealIncoming.
  // REQUIRES: map_mu_ held. Whether shard s's incoming copy is sealed.
  bool CompleteCopy(uint32_t s) const;
  // REQUIRES: map_mu_ held exclusively. Shard s has no incoming copy or operation any more (its
  // copy installed, aborted, or superseded by the replica).
  void EndIncoming(uint32_t s);
  std::unique_ptr<std::atomic<int64_t>[]> out_seen_, in_seen_;
  bool Busy(uint64_t current, uint64_t op, const std::atomic<int64_t>& seen) const;
  mutable std::mutex dirty_mu_;
  std::vector<std::unordered_set<uint64_t>> dirty_;     // GUARDED_BY(dirty_mu_)
  std::vector<std::vector<uint64_t>> frozen_rows_;      // GUARDED_BY(dirty_mu_)
  bool dropped_ = false;  // GUARDED_BY(map_mu_)
  uint64_t incarnation_;
};

class TableRegistry {
 public:
  explicit TableRegistry(uint32_t node_id = 0, storage::ShardOptions options = storage::ShardOptions{})
      : node_id_(node_id), options_(options) {}

  // Creates a table with `num_shards` virtual shards, all owned by this node (single-node mode).
  // AlreadyExists if the name is taken.
  StatusOr<std::shared_ptr<Table>> CreateTable(const TableSchema& schema, uint32_t num_shards);
  // Creates a table placed by `map`; this node holds the shards `map` gives `node_id`.
  StatusOr<std::shared_ptr<Table>> CreateTable(const TableSchema& schema, cluster::ShardMap map, uint32_t node_id,
                                               uint64_t incarnation = 0);
  // Where tables with a DRAM budget keep their cold tiers (a directory this registry owns; set
  // before such tables are created). Empty: such tables are refused.
  void SetColdDir(std::string dir);
  // All tables, by name.
  std::vector<std::shared_ptr<Table>> Tables() const;
  // Bytes of rows materialised over all tables (value slots and optimizer state).
  uint64_t TouchedBytes() const;
  Status DropTable(const std::string& name);
  // NotFound if no table has that name.
  StatusOr<std::shared_ptr<Table>> Get(const std::string& name) const;
  std::vector<std::string> List() const;

 private:
  const uint32_t node_id_;
  const storage::ShardOptions options_;
  mutable std::mutex mu_;
  std::string cold_dir_;  // GUARDED_BY(mu_)
  std::map<std::string, std::shared_ptr<Table>> tables_;  // GUARDED_BY(mu_)
};

}  // namespace engram::ps

#endif  // ENGRAM_PS_TABLE_REGISTRY_H_
