// Client: the trainer-side library of engram-ps.
//
// Connect to one server or a static list (the position in the list is the server's node id,
// which each server confirms at connect). Tables are split into virtual shards placed over the
// servers; a TableHandle routes rows by its cached shard map.
//
// Consistency contract (what a trainer may rely on):
// - A pull returns, for each row, a value that some completed push (or put) produced, or the
//   row's deterministic initial value; never a torn row.
// - A push acknowledged with OK is applied exactly once: retransmissions after a timeout carry
//   the same (client id, sequence) and the server applies them at most once. A push that
//   returns an error was applied nowhere if the error is a validation error (InvalidArgument,
//   OutOfRange, FailedPrecondition, ResourceExhausted) found on the first server that checks
//   it. A push spans one part per server; if a part still fails with Unavailable or
//   DeadlineExceeded after all attempts, the parts other servers acknowledged stay applied and
//   the error names the servers whose part is not known to be applied.
// - Reads may be stale by at most the pushes in flight. Push() returns only after every server
//   involved applied its part, so a Pull() issued after a Push() returns sees it
//   (read-your-writes for one client; other clients' in-flight pushes may or may not be seen).
//
// Thread-safety: Client and TableHandle are thread-safe; calls from many threads proceed in
// parallel and share one UCX worker. Every call has a deadline (ClientOptions::timeout).
#ifndef ENGRAM_CLIENT_CLIENT_H_
#define ENGRAM_CLIENT_CLIENT_H_

#include <atomic>
#include <chrono>
#include <future>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "client/transport.h"
#include "cluster/shard_map.h"
#include "engram/status.h"
#include "engram/table.h"
#include "engram/wire.h"

namespace engram::client {

struct ClientOptions {
  // "HOST:PORT" of each server; index i must be the server started with --node_id=i. An empty
  // entry is a node id with no live daemon now (cluster::DiscoverServers leaves such holes):
  // calls to it fail with Unavailable, and the rest of the cluster is used as usual (a failed
  // primary's shards are read from their backups, or from their new owner after a failover).
  std::vector<std::string> servers;
  // Deadline of each attempt of a call (connect, pull, push, admin).
  std::chrono::milliseconds timeout{10000};
  // Attempts per call for transient errors (Unavailable, DeadlineExceeded), >= 1.
  int max_attempts = 3;
  // Pause before the second attempt, doubling for each later one (at most 1 s): a restarting
  // server gets time to come back.
  std::chrono::milliseconds retry_backoff{20};
  // Names this trainer (0: a random id). Exactly-once covers the retries of one Client object:
  // each Client numbers its pushes in a session of its own, the id mixed with a random
  // incarnation drawn at Connect (push_session()), so a trainer restarted with the same id starts
  // a new session and its pushes are never taken for the previous process's (a process cannot
  // resend its predecessor's pushes anyway: it does not know which of them were applied).
  uint64_t client_id = 0;
  // Progress transfers in a background thread while the caller computes (needed for pulls
  // started with StartPull/Prefetch to move before Wait). Blocking calls progress themselves.
  bool progress_thread = true;
  // Read rows one-sidedly from servers whose arenas this process can map (same host, shared
  // memory), checking each row's version words and checksum; torn rows are re-read, then fall
  // back to the RPC pull. Other servers are read by RPC.
  bool one_sided = true;
  // Read one-sidedly with ucp_get_nbx even where the arena could be mapped or UCX would only
  // emulate gets (tcp): exercises the RDMA read path on machines without an RDMA NIC (tests and
  // benchmarks). Without it, gets are used only over transports with native one-sided reads.
  bool force_rma_get = false;
  // Send requests to servers on this host over UCX's shared-memory lanes (an endpoint to the
  // server's worker address) rather than tcp: ~2.6x faster small RPCs (docs/benchmarks.md).
  // Off by default: UCX's shared-memory receive queue is one FIFO per worker shared by every
  // sender, and a sender killed in the middle of a message (a trainer's kill -9) leaves an
  // element that is never completed, so the server stops receiving over shared memory from
  // anyone. Turn it on only where clients do not die mid-request. (One-sided reads of mapped
  // arenas do not use that queue and stay on.)
  bool rpc_over_shared_memory = false;
};

struct ClientStats {
  uint64_t rows_one_sided = 0;  // Rows read straight from a server's arena (duplicates each count).
  uint64_t rows_rma_get = 0;    // Of those, rows read with ucp_get_nbx (not a local mapping).
  uint64_t rows_rpc = 0;        // Unique rows read through pull requests.
  uint64_t torn_copies = 0;     // One-sided copies rejected as torn (and re-read).
  uint64_t rows_from_backups = 0;  // Rows of pulls served around failed servers by backups.
};

class Client;

// Pull in flight, returned by TableHandle::StartPull. Wait() completes it (once).
class PendingPull {
 public:
  PendingPull() = default;
  PendingPull(PendingPull&&) = default;
  PendingPull& operator=(PendingPull&&) = default;
  // Blocks until all parts arrived (or failed) and the values are in the caller's buffer.
  Status Wait();
  // After Wait: per server, whether a part it was sent failed without an answer (a lost
  // connection, a timeout). Empty if none did.
  const std::vector<bool>& unanswered() const { return unanswered_; }

 private:
  friend class TableHandle;
  struct Part {
    int server;
    uint64_t request;
    std::vector<uint32_t> positions;  // Indexes into `unique` that this part carries.
  };
  class TableHandle* table = nullptr;
  Status early;  // An error found before sending.
  // Rows read one-sidedly were written to `out` by StartPull. The rest go by RPC:
  // rpc_positions are their indexes in the request, unique/inverse their de-duplication
  // (inverse[k] for rpc_positions[k]), and unique row u lands at out + dest[u] * value_bytes
  // (its first position); Wait() copies it to the positions of its duplicates.
  std::vector<uint32_t> rpc_positions;
  std::vector<uint64_t> unique;
  std::vector<uint32_t> inverse;
  std::vector<uint32_t> dest;
  std::vector<Part> parts;
  uint8_t* Landing(uint32_t u, size_t vb) { return out + size_t{dest[u]} * vb; }
  uint8_t* out = nullptr;
  Clock::time_point deadline;
  std::vector<bool> unanswered_;
  bool done = false;
};

class TableHandle {
 public:
  const TableSchema& schema() const { return info_.schema; }
  uint64_t epoch() const;

  // Reads rows' values at rest (schema().value_bytes() each, packed in request order) into
  // `out`. Duplicates are read once; one request per server, all in flight together.
  Status Pull(std::span<const uint64_t> rows, uint8_t* out /* (n, value_bytes) */);
  // Starts a pull and returns at once; `rows` may be reused immediately, `out` must stay valid
  // until Wait() returns.
  PendingPull StartPull(std::span<const uint64_t> rows, uint8_t* out);
  // Pull on a helper thread, as a std::future (`rows` is copied; `out` must stay valid until
  // the future is ready). StartPull is the cheaper way to overlap a pull with compute.
  std::future<Status> PullAsync(std::span<const uint64_t> rows, uint8_t* out);
  // Pull decoded to f32. InvalidArgument for opaque byte tables.
  Status PullF32(std::span<const uint64_t> rows, float* out /* (n, dim) */);

  // Pushes f32 gradients (dim each, in request order); duplicate rows are summed before they
  // cross the network, and each server receives one gradient per unique row it owns.
  // Retries transient failures with the same sequence numbers, so no part applies twice.
  Status Push(std::span<const uint64_t> rows, const float* grads /* (n, dim) */);
  // Push on a helper thread: `rows` and `grads` are copied, so the caller may reuse them at once.
  // The handle must outlive the future.
  std::future<Status> PushAsync(std::span<const uint64_t> rows, const float* grads /* (n, dim) */);
  // Overwrites rows with values at rest.
  Status Put(std::span<const uint64_t> rows, const uint8_t* values /* (n, value_bytes) */);

 private:
  friend class Client;
  friend class PendingPull;
  // How a shard is read without its server's CPU: a mapping (base), one-sided gets (get_key),
  // or neither (RPC).
  struct Direct {
    const uint8_t* base = nullptr;  // Mapped into this process.
    int get_key = -1;               // Transport region for ucp_get_nbx; -1: no gets.
    int server = -1;
    uint64_t remote_base = 0;       // The server's address of the shard's first slot.
    uint64_t generation = 0;        // The connection's generation when opened.
    uint64_t first_row = 0, num_rows = 0, stride = 0;
    // Row-cache shards (storage/row_cache.h): row r may be in any of the `ways` slots of set
    // (r - first_row) % sets, tagged with its row id; absent rows are read by RPC. ways 0: one
    // slot per row.
    uint64_t sets = 0;
    uint32_t ways = 0;
    // The server's lease word, mapped (ServiceOptions::readable_until): its slots are read only
    // while the steady clock is before it. nullptr: the server publishes none (no etcd), or it
    // is read with gets (another host's clock cannot be compared).
    const std::atomic<int64_t>* lease = nullptr;
    // Offset of the first slot that may hold `row`.
    uint64_t Offset(uint64_t row) const {
      return ways == 0 ? (row - first_row) * stride : (row - first_row) % sets * ways * stride;
    }
  };
  TableHandle(Client* c, wire::TableInfo info, cluster::ShardMap map)
      : client_(c), info_(std::move(info)), map_(std::make_shared<cluster::ShardMap>(std::move(map))),
        direct_(std::make_shared<std::vector<Direct>>()) {}
  std::shared_ptr<const cluster::ShardMap> map() const;
  std::shared_ptr<const std::vector<Direct>> direct() const;
  // Asks each server for its arenas' rkeys and maps those this process can reach.
  Status MapArenas();
  // The one-sided access of this table, reopened first if a connection it used was closed
  // since (a server failed or restarted: its old arena must not be read).
  std::shared_ptr<const std::vector<Direct>> CurrentDirect();
  // Copies one row one-sidedly; false if every attempt was torn, or the row is not in a row
  // cache's DRAM.
  bool ReadDirect(const Direct& d, uint64_t row, uint8_t* dst, std::vector<float>* init_scratch) const;
  bool ReadCachedDirect(const Direct& d, uint64_t row, uint8_t* dst) const;
  // Reads rows[positions[k]] of shards read by gets into out + positions[k] * value_bytes, with
  // whole-slot gets validated by version words and checksum; torn copies are re-read a few
  // times. Returns the positions still unread (torn, or a failed get): the caller pulls them by RPC.
  std::vector<uint32_t> ReadByGets(const std::vector<Direct>& direct, const cluster::ShardMap& map,
                                   std::span<const uint64_t> rows, std::vector<uint32_t> positions, uint8_t* out,
                                   Clock::time_point deadline, std::vector<float>* init_scratch) const;
  // Fetches the table's map again (from any server that answers). With `map_arenas`, also asks
  // every server for its arenas; without (after a server gave no answer), keeps the one-sided
  // access of the shards whose owner did not change, and the next pull's probe maps the arenas
  // again, asking only servers whose lease word has not passed: a hung server costs no second
  // timeout.
  Status Refresh(bool map_arenas = true);
  // Per server (of `num_servers`): 1 if the lease word its mapped shards in `direct` are read
  // under has passed on this host's steady clock (hung, cut off, or catching up): its shards go
  // by RPC. Read once per pull (and per remap), not per row.
  static std::vector<uint8_t> LeasesPassed(const std::vector<Direct>& direct, size_t num_servers);
  // StartPull; with `failed` (per server), rows of failed servers' shards go to their backups
  // (kPullAnyCopy) and nothing is read one-sidedly.
  PendingPull StartPullImpl(std::span<const uint64_t> rows, uint8_t* out, const std::vector<bool>* failed);
  // Groups unique row positions by owning server.
  std::vector<std::vector<uint32_t>> ByServer(const cluster::ShardMap& map, std::span<const uint64_t> rows) const;
  Status PullOnce(std::span<const uint64_t> unique, uint8_t* unique_out);

  Client* client_;
  wire::TableInfo info_;
  mutable std::mutex mu_;
  std::shared_ptr<const cluster::ShardMap> map_;  // GUARDED_BY(mu_)
  std::shared_ptr<const std::vector<Direct>> direct_;  // GUARDED_BY(mu_), index = shard
  std::atomic<int64_t> last_probe_ns_{0};  // CurrentDirect's last liveness probe (steady clock).
  // A refresh without arenas happened: the next probe maps them again (servers whose lease word
  // has passed are not asked).
  std::atomic<bool> remap_pending_{false};
};

class Client {
 public:
  // Connects to every server and checks each one's node id and protocol version.
  static StatusOr<std::unique_ptr<Client>> Connect(const ClientOptions& options);

  // Servers known so far: the list given, plus nodes learned from the cluster later (a node
  // added to the cluster while this client runs). Never shrinks.
  size_t num_servers() const { return num_servers_.load(std::memory_order_acquire); }
  const std::string& server_address(size_t i) const { return servers_[i]; }
  // False for a node id that had no live daemon when this client connected.
  bool reachable(size_t i) const { return transport_->has_address(conns_[i]); }
  uint64_t client_id() const { return client_id_; }
  // The key this Client's pushes are numbered under on the servers (see ClientOptions::client_id).
  uint64_t push_session() const { return push_session_; }
  ClientStats stats() const {
    return {rows_one_sided_.load(), rows_rma_get_.load(), rows_rpc_.load(), torn_copies_.load(),
            rows_from_backups_.load()};
  }

  // Creates a table with `num_shards` virtual shards dealt round-robin over the servers; with
  // `replicas` 2 each shard also has a backup on the next server (pushes and puts are applied
  // there before they are acknowledged; servers need an etcd cluster to reach each other and to
  // fail over). If any server refuses, the table is dropped again from those that accepted.
  Status CreateTable(const TableSchema& schema, uint32_t num_shards, uint32_t replicas = 1);
  Status DropTable(const std::string& name);
  // Table infos as server 0 knows them, with touched rows summed over all servers.
  StatusOr<std::vector<wire::TableInfo>> ListTables();
  StatusOr<wire::TableInfo> DescribeTable(const std::string& name);
  StatusOr<std::unique_ptr<TableHandle>> OpenTable(const std::string& name);
  // OpenTable, with or without mapping the servers' arenas (ClientOptions::one_sided permitting).
  StatusOr<std::unique_ptr<TableHandle>> OpenTable(const std::string& name, bool map_arenas);
  // Each server's status JSON, in server order.
  StatusOr<std::vector<std::string>> ServerStatus();
  // Asks server `server` to write a checkpoint of all its tables now; returns its JSON report
  // ({"node", "checkpoint", "rows", "bytes", "seconds"}). FailedPrecondition if the server
  // keeps nothing on disk (no --data_dir).
  StatusOr<std::string> Checkpoint(int server, const std::string& label = "");
  // Asks server `server` to roll table `name` back to its checkpoint labeled `label` (see
  // ps/durability.h); returns its JSON report ({"rows_restored", "rows_reset", ...}).
  StatusOr<std::string> RestoreTable(int server, const std::string& name, const std::string& label);
  // Asks server `server` to stop keeping its checkpoints labeled `label` (see
  // ps/durability.h); returns its JSON report ({"dropped": n, ...}).
  StatusOr<std::string> DropCheckpoint(int server, const std::string& label);
  // Sends one administrative request (e.g. the steps of a shard move, cluster/shard_mover.h) to
  // server `server` and returns its reply payload; retried like every call.
  StatusOr<std::vector<uint8_t>> AdminCall(int server, wire::MsgType type, const std::vector<uint8_t>& payload);

 private:
  friend class TableHandle;
  friend class PendingPull;
  explicit Client(ClientOptions o)
      : options_(std::move(o)), servers_(kMaxServers), conns_(kMaxServers, -1), pids_(kMaxServers) {}
  static constexpr size_t kMaxServers = 1024;
  // Connects to `address` as node `i` (checks its node id and protocol, enables shared-memory
  // requests when on this host). REQUIRES: i == num_servers(), under add_mu_ or before
  // the client is shared.
  Status AddServer(size_t i, const std::string& address);
  // Asks a known server for the cluster's live nodes and connects to those this client lacks
  // (their ids must continue the known ones). FailedPrecondition without a cluster.
  // Asks a server for the cluster's live nodes: connects to those beyond this client's list, and
  // to node ids that had no daemon when it connected and have one now.
  Status LearnNodes();
  // kHello to server i: checks its node id, records its pid, and moves requests to shared
  // memory where it can.
  Status Hello(size_t i);
  // Sends to one server and waits, retrying transient failures (reconnecting if needed).
  // `attempts` 0: ClientOptions::max_attempts.
  StatusOr<ReplyMessage> Call(int server, wire::MsgType type, uint64_t epoch, const std::vector<uint8_t>& payload,
                              int attempts = 0);
  // Call on each server with an address in turn until one answers (a question any server can
  // answer: the tables, the cluster's nodes).
  StatusOr<ReplyMessage> CallAny(wire::MsgType type, const std::vector<uint8_t>& payload, int attempts = 0);
  // Replaces the connection to `server` if it failed.
  Status EnsureConnected(int server);
  // Sleeps before attempt `attempt` (none before the first): retry_backoff doubling to 1 s, or,
  // when the last failure was a live server's own "retry" answer, 1 ms doubling for 6 attempts.
  void Backoff(int attempt, bool server_answered = false) const;
  // Sends `strings` to `server` as one `type` request; returns the JSON string it answers.
  StatusOr<std::string> AdminJson(int server, wire::MsgType type, const std::vector<std::string>& strings);
  Clock::time_point Deadline() const { return Clock::now() + options_.timeout; }

  ClientOptions options_;
  uint64_t client_id_ = 0;
  uint64_t push_session_ = 0;
  std::atomic<uint64_t> next_seq_{1};
  std::atomic<uint64_t> rows_one_sided_{0}, rows_rma_get_{0}, rows_rpc_{0}, torn_copies_{0}, rows_from_backups_{0};
  std::unique_ptr<Transport> transport_;
  // Per node id, fixed capacity: entries below num_servers_ are written once before it is
  // raised (release), so readers index them without a lock.
  std::vector<std::string> servers_;
  std::vector<int> conns_;  // Transport connection per server.
  std::vector<std::atomic<uint32_t>> pids_;  // Per server its process id (hello), for same-host liveness checks.
  std::atomic<int64_t> last_learn_ms_{0};  // EnsureConnected's last LearnNodes for an address-less node.
  std::atomic<size_t> num_servers_{0};
  std::mutex add_mu_;  // Serialises AddServer.
};

}  // namespace engram::client

#endif  // ENGRAM_CLIENT_CLIENT_H_
