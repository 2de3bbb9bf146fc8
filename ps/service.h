// Service: decodes and validates one request, runs it against the TableRegistry and encodes
// the reply. Transport-free, so every malformed-input case is testable in-process.
//
// Every failure becomes an error reply (a Code and a message); nothing a client sends can
// crash the daemon or half-apply a batch. Thread-safe: Handle() may run on many threads.
#ifndef ENGRAM_PS_SERVICE_H_
#define ENGRAM_PS_SERVICE_H_

#include <atomic>
#include <functional>
#include <optional>
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "engram/status.h"
#include "engram/wire.h"
#include "ps/backup_links.h"
#include "ps/durability.h"
#include "ps/push_dedup.h"
#include "ps/table_registry.h"

namespace engram::ps {

// What the transport exposes for one-sided reads. Implemented by the daemon's UCX glue.
class RemoteAccess {
 public:
  virtual ~RemoteAccess() = default;
  // The UCX worker address clients connect their RMA endpoints to.
  virtual std::vector<uint8_t> WorkerAddress() const = 0;
  // Packed rkey of the registered region starting at `base`; empty if not registered.
  virtual std::vector<uint8_t> Rkey(const void* base) const = 0;
};

struct ServiceOptions {
  uint32_t node_id = 0;
  // Largest pull/push/put batch in rows; larger requests are refused (InvalidArgument).
  uint32_t max_batch_rows = 1u << 20;
  // Bytes of materialised rows (values + optimizer state) this node may hold; pushes and puts
  // beyond it are refused with ResourceExhausted. 0: unlimited.
  uint64_t memory_budget = 0;
  storage::ShardOptions shard;
  // One-sided access to arenas; nullptr: the service answers kRmaInfo with no shards.
  const RemoteAccess* remote = nullptr;
  // The node's lease word, in a registered region (kRmaInfo names it): steady-clock nanoseconds
  // until which one-sided readers may read this node's arenas (its etcd lease surely holds and
  // it is caught up with the cluster's maps; 0: not now). Same-host readers compare it with
  // their own clock, so a hung or cut-off node whose shards were failed over is not read on.
  // nullptr: none (readers need no lease).
  const std::atomic<int64_t>* readable_until = nullptr;
  // Fencing: pushes and puts are refused (Unavailable) while this returns false, e.g. while the
  // node's etcd lease may have expired. Empty: always allowed.
  std::function<bool()> write_allowed;
  // Pulls by RPC are refused (Unavailable) while this returns false: a node whose lease surely
  // expired, and one that rejoined after that, until it caught up with the cluster's maps.
  // (One-sided readers of its arenas are not stopped: see docs/architecture.md.) Empty: always
  // allowed.
  std::function<bool()> read_allowed;
  // The cluster's live nodes (node id, data address), for clients that meet a node they do not
  // know (after add-node). Empty: kNodes answers FailedPrecondition (no cluster).
  std::function<StatusOr<std::vector<std::pair<uint32_t, std::string>>>()> cluster_nodes;
  // Calls another daemon (by data address) and returns its reply payload: shard moves stream
  // rows from the source straight to the destination. The wait gives up (Aborted) once `cancel`
  // (may be null) turns true. Empty: kShardPush answers FailedPrecondition and the move's driver
  // relays the rows itself.
  std::function<StatusOr<std::vector<uint8_t>>(const std::string& address, wire::MsgType type,
                                               std::vector<uint8_t> payload, const std::atomic<bool>* cancel)>
      peer_call;
  // How long new replicas to a backup node whose replica got no answer fail at once (see
  // ps/backup_links.h); the other waits on it end at once regardless. The daemon uses 0.
  std::chrono::milliseconds backup_silence{0};
  // Replication (with a cluster): a node's data address, and dropping unreachable backups of a
  // table's shards from the cluster's record (compare-and-swap; returns the new record, which
  // every live node must then adopt). When the record no longer makes this node the owner of one
  // of `shards` (it was failed over meanwhile), nothing is changed and the record is returned.
  std::function<StatusOr<std::string>(uint32_t node)> node_address;
  std::function<StatusOr<wire::TableInfo>(const std::string& table, const std::vector<uint32_t>& shards)> drop_backups;
};

struct Reply {
  Code code = Code::kOk;
  std::vector<uint8_t> payload;  // The encoded result, or the error message.
};

class Service {
 public:
  explicit Service(ServiceOptions options)
      : options_(options),
        registry_(options.node_id, options.shard),
        backups_(options.backup_silence),
        started_(std::chrono::steady_clock::now()) {}

  // Makes writes durable under options.dir and recovers what is there (see ps/durability.h).
  // Call once, before the first request.
  Status EnableDurability(const DurabilityOptions& options, RecoveryStats* stats);
  // The daemon's etcd follower: creates a table the cluster records but this node lacks (a node
  // added later learns the tables so that shards can move to it). Newer maps are installed by
  // AdoptRecord (the follower calls it for every record newer than the table's map).
  Status FollowRecord(const wire::TableInfo& record, bool* created);
  // Installs a table's newer map (kAdoptMap; the failover leader on itself) and saves the
  // catalog; a map older than this node's is already superseded here (OK, nothing changes).
  // With `retire_first`, the map first goes (as a forwarded kAdoptMap, which forwards no
  // further) to each live node this map takes a shard from that this node gains: the old copy
  // is retired before this node serves the shard, whatever order the map's senders use (a
  // move's driver sends the source first, but another operation's newer map may reach this
  // node first, and one-sided readers of the old copy would read stale rows meanwhile).
  Status AdoptRecord(const wire::TableInfo& info, bool retire_first = true);
  // A table's shard-map epoch here (0: no such table).
  uint64_t TableEpoch(const std::string& name) const;
  // Writes a checkpoint now (also what kCheckpoint requests run). FailedPrecondition without
  // durability.
  StatusOr<CheckpointStats> Checkpoint(const std::string& label = "");

  // Executes one request. `payload` is the request's bytes after the header.
  Reply Handle(const wire::Header& header, const uint8_t* payload, size_t len);

  // Whether a request should run off the I/O thread (it may take more than a few microseconds,
  // or wait for a lock): all but kHello and small pulls.
  static bool IsHeavy(const wire::Header& header, size_t payload_len);
  // Whether a request only reads (pulls, describe, list, arena info, stats, nodes): the daemon
  // runs these on workers of their own, apart from writes that may wait on peers.
  static bool IsRead(const wire::Header& header);
  // Executes a light request on the transport's I/O thread, which must never wait: nullopt when
  // it would (a small pull of a table whose map lock a map change holds or waits for, behind
  // writes waiting on a slow backup); the caller then runs Handle on a worker thread.
  std::optional<Reply> HandleOnIoThread(const wire::Header& header, const uint8_t* payload, size_t len);

  const TableRegistry& registry() const { return registry_; }
  // Prometheus text exposition of the service's counters and tables.
  std::string MetricsText() const;
  // JSON with node, uptime and tables.
  std::string StatusJson() const;

  struct Counters {
    std::atomic<uint64_t> requests[16] = {};
    std::atomic<uint64_t> errors[16] = {};
    std::atomic<uint64_t> rows_pulled{0};
    std::atomic<uint64_t> rows_pushed{0};
    std::atomic<uint64_t> rows_put{0};
    std::atomic<uint64_t> duplicate_pushes{0};
  };
  const Counters& counters() const { return counters_; }

 private:
  Status Run(const wire::Header& h, wire::Reader& r, std::vector<uint8_t>* out);
  Status CreateTable(wire::Reader& r);
  // `any_copy`: kPullAnyCopy (this node's backup copies serve too).
  Status Pull(const wire::Header& h, wire::Reader& r, std::vector<uint8_t>* out, bool any_copy = false,
              bool* would_block = nullptr);
  // The reply to a request that ran (counts it, and turns an error into its code and message).
  Reply Answer(const wire::Header& h, const Status& s, Reply reply);
  Status Push(const wire::Header& h, wire::Reader& r);
  Status Put(const wire::Header& h, wire::Reader& r);
  // Replication: sends a kReplicate payload to `node`; applies one received from a primary;
  // drops unreachable backups (then adopts the new map) so an acknowledged write is never
  // missing from a backup that could be promoted.
  Status SendReplica(uint32_t node, std::vector<uint8_t> payload);
  Status Replicate(wire::Reader& r);
  // A restore of `t` from checkpoint `label`; a replicated table's backups of this node's shards
  // leave the map first (re-replication copies the restored rows).
  StatusOr<std::pair<uint64_t, uint64_t>> RestoreTable(Table& t, const std::string& label);
  Status DropBackups(Table& t, const std::vector<uint32_t>& shards);
  // One step of a live shard move (the kShard* requests).
  Status MoveStep(wire::MsgType type, wire::Reader& r, std::vector<uint8_t>* out);
  Status RmaInfo(wire::Reader& r, std::vector<uint8_t>* out);
  StatusOr<std::shared_ptr<Table>> TableFor(const wire::Header& h, wire::Reader& r);
  Status ReadRows(wire::Reader& r, std::vector<uint64_t>* rows);
  Status CheckBudget() const;
  Status CheckWritable() const;
  wire::TableInfo Info(const Table& t) const;

  // Appends `record` from inside the write (WriteLog::logged); sets *lsn.
  Status LogWrite(LogRecord* record, uint64_t* lsn);

  const ServiceOptions options_;
  TableRegistry registry_;
  PushDedup dedup_;
  BackupLinks backups_;
  std::unique_ptr<Durability> durability_;
  Counters counters_;
  const std::chrono::steady_clock::time_point started_;
};

}  // namespace engram::ps

#endif  // ENGRAM_PS_SERVICE_H_
