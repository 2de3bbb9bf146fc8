// engram-server: the engram-ps daemon. Single-node by default: it owns the shards it is given
// by table creation requests (with a static server list, each server owns its share).
#include <signal.h>

#include <cstdio>
#include <chrono>
#include <condition_variable>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <atomic>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <string>
#include <sys/stat.h>

#include <gflags/gflags.h>
#include <glog/logging.h>

#include "engram/host_port.h"
#include "ps/admin_http.h"
#include "ps/service.h"
#include "cluster/cluster_state.h"
#include "cluster/etcd_client.h"
#include "client/transport.h"
#include "cluster/membership.h"
#include "cluster/rejoin.h"
#include "cluster/repair.h"
#include "cluster/shard_mover.h"
#include "ps/thread_pool.h"
#include "ps/ucx_arena.h"
#include "ps/ucx_server.h"

DEFINE_string(listen, "127.0.0.1:7070", "HOST:PORT of the UCX data plane (port 0: ephemeral)");
DEFINE_string(admin_listen, "127.0.0.1:7071", "HOST:PORT of the admin HTTP endpoint (/healthz, /metrics, /status)");
DEFINE_string(data_dir, "", "directory for this server's catalog, write-ahead log and checkpoints; the server "
                            "recovers its tables from it at start. Empty: nothing is durable");
DEFINE_string(durability, "sync", "with --data_dir: sync (a push or put is acknowledged once its log record is on disk, "
                                  "group commit), async (the log is synced every --wal_sync_interval_ms: a machine "
                                  "crash loses at most that much acknowledged data; a process crash loses nothing)");
DEFINE_bool(recover_past_corruption, false, "with --data_dir: serve what a damaged write-ahead log holds before the "
            "damage (the acknowledged writes logged after it are lost). Off: the daemon refuses to start while shards "
            "it would serve from the damaged log have no other live copy (with --etcd, those with a live backup are "
            "handed to it)");
DEFINE_int32(wal_sync_interval_ms, 100, "with --durability=async: how often the log is synced");
DEFINE_string(etcd, "", "HOST:PORT of etcd (its client URL): join the cluster's membership under a lease and fence "
                        "writes whenever the lease cannot be renewed. Empty: single-node mode, no etcd");
DEFINE_string(cluster, "default", "cluster name: the etcd key prefix /engram/<cluster>/");
DEFINE_int32(lease_ttl_s, 5, "etcd lease TTL: a daemon that dies leaves the membership after this long");
DEFINE_int32(etcd_sync_ms, 1000, "with --etcd: how often the daemon reads the cluster's table records to create the "
             "tables it lacks (a node added later learns them)");
DEFINE_int32(checkpoint_interval_s, 600, "with --data_dir: write a checkpoint (and drop the log it covers) this often; 0: only on request");
DEFINE_int32(threads, 2, "worker threads for pushes, puts and large pulls");
DEFINE_string(memory_budget, "0", "bytes of materialised rows this node may hold (suffix K, M, G, T); 0: unlimited");
DEFINE_uint32(node_id, 0, "this server's node id (its index in the clients' --servers list)");
DEFINE_uint32(max_batch_rows, 1u << 20, "largest pull/push/put batch in rows");
DEFINE_string(port_file, "", "if set, write \"<data port> <admin port>\" here once listening");
DEFINE_bool(one_sided, true, "register arenas with UCX so same-host clients read rows one-sidedly");
DEFINE_uint64(rma_max_bytes, 1ull << 30, "total bytes of arenas registered for one-sided reads (registered arenas are "
                                         "shared memory, committed when the table is created); beyond it: RPC only");

namespace {

using namespace engram;

StatusOr<uint64_t> ParseBytes(const std::string& s) {
  try {
    size_t used = 0;
    const double v = std::stod(s, &used);
    std::string suffix = s.substr(used);
    double mult = 1;
    if (suffix == "K" || suffix == "k") mult = 1024.0;
    else if (suffix == "M" || suffix == "m") mult = 1024.0 * 1024;
    else if (suffix == "G" || suffix == "g") mult = 1024.0 * 1024 * 1024;
    else if (suffix == "T" || suffix == "t") mult = 1024.0 * 1024 * 1024 * 1024;
    else if (!suffix.empty()) throw std::invalid_argument(suffix);
    if (v < 0) throw std::invalid_argument(s);
    return static_cast<uint64_t>(v * mult);
  } catch (const std::exception&) {
    return Status::InvalidArgument("--memory_budget: cannot read '" + s + "' (e.g. 64G)");
  }
}

// Connects *etcd to --etcd if it is not connected yet (short deadlines: callers retry).
Status ConnectEtcdOnce(std::unique_ptr<cluster::EtcdClient>* etcd) {
  if (*etcd) return Status::OK();
  cluster::EtcdClient::Options eo;
  eo.endpoint = FLAGS_etcd;
  eo.timeout = std::chrono::seconds(2);
  ENGRAM_ASSIGN_OR_RETURN(*etcd, cluster::EtcdClient::Connect(eo));
  return Status::OK();
}

// Logs a background step's failure unless it repeats the last one (a step retried every pass
// that keeps failing the same way says so once). One per thread of work.
class ChangedErrorLog {
 public:
  void Warn(const std::string& context, const std::string& error) {
    if (error != last_) LOG(WARNING) << context << ": " << error;
    last_ = error;
  }
  void Clear() { last_.clear(); }

 private:
  std::string last_;
};

// Before registering: a restarted daemon gives up the copies it may have lost or that may lag
// their other copy (cluster/rejoin.h), and says what it gave up and what it keeps.
// Returns how many shards it keeps (those without a live backup).
StatusOr<size_t> StepDownBeforeJoining(const std::function<void(const wire::TableInfo&)>& announce) {
  std::unique_ptr<cluster::EtcdClient> etcd;
  ENGRAM_RETURN_IF_ERROR(ConnectEtcdOnce(&etcd));
  ENGRAM_ASSIGN_OR_RETURN(auto live, cluster::Membership::List(*etcd, FLAGS_cluster));
  std::set<uint32_t> up;
  for (const auto& n : live) up.insert(n.node_id);
  cluster::ClusterState state(etcd.get(), FLAGS_cluster);
  ENGRAM_ASSIGN_OR_RETURN(auto outcomes, cluster::StepDownOnRestart(state, up, FLAGS_node_id, announce));
  size_t kept = 0;
  for (const auto& o : outcomes) {
    kept += o.kept.size();
    if (!o.handed_off.empty() || !o.dropped.empty()) {
      LOG(WARNING) << "restarted: gave " << o.handed_off.size() << " shard(s) of '" << o.table
                   << "' to their backups and stopped backing up " << o.dropped.size() << " (epoch " << o.epoch
                   << "); re-replication copies them anew";
    }
    if (o.kept.empty()) continue;
    if (FLAGS_data_dir.empty()) {
      LOG(ERROR) << "restarted without --data_dir: " << o.kept.size() << " shard(s) of '" << o.table
                 << "' have no other live copy; their rows written before the restart are lost";
    } else {
      LOG(INFO) << "restarted: keeps " << o.kept.size() << " shard(s) of '" << o.table
                << "' (no live backup; served from what " << FLAGS_data_dir << " recovered)";
    }
  }
  return kept;
}

Status LogDamaged(const std::vector<std::string>& where, const std::string& what) {
  return Status::DataLoss("the write-ahead log in " + FLAGS_data_dir + " is damaged (" + where[0] +
                          "): acknowledged writes logged after it are lost on this node, and " + what +
                          "; restore the log, or start with --recover_past_corruption to serve without them");
}

// The step down, and a damaged log's refusal when shards would be served from it with no other
// live copy (unless --recover_past_corruption).
Status RejoinBeforeRegistering(const std::vector<std::string>& log_damage,
                               const std::function<void(const wire::TableInfo&)>& announce) {
  auto kept = StepDownBeforeJoining(announce);
  if (!kept.ok()) return kept.status().WithContext("stepping down from the shards a restart may have lost");
  if (!log_damage.empty() && *kept > 0 && !FLAGS_recover_past_corruption) {
    return LogDamaged(log_damage, std::to_string(*kept) + " shard(s) it owns have no live backup to take them");
  }
  return Status::OK();
}

int Die(const Status& s) {
  LOG(ERROR) << s.ToString();
  std::fprintf(stderr, "engram-server: %s\n", s.ToString().c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  gflags::SetUsageMessage("engram-ps parameter server daemon");
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  FLAGS_logtostderr = true;
  google::InitGoogleLogging(argv[0]);

  // Signals are taken synchronously by the main thread; every other thread inherits the mask.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  signal(SIGPIPE, SIG_IGN);

  auto data = ParseHostPort(FLAGS_listen, /*allow_port_zero=*/true);
  if (!data.ok()) return Die(data.status().WithContext("--listen"));
  auto admin = ParseHostPort(FLAGS_admin_listen, /*allow_port_zero=*/true);
  if (!admin.ok()) return Die(admin.status().WithContext("--admin_listen"));
  auto budget = ParseBytes(FLAGS_memory_budget);
  if (!budget.ok()) return Die(budget.status());
  if (FLAGS_threads < 1 || FLAGS_threads > 256) return Die(Status::InvalidArgument("--threads must be 1..256"));
  if (!FLAGS_data_dir.empty() && mkdir(FLAGS_data_dir.c_str(), 0755) != 0 && errno != EEXIST) {
    return Die(Status::IoError("cannot create --data_dir " + FLAGS_data_dir));
  }

  auto pool = std::make_unique<ps::ThreadPool>(FLAGS_threads);
  // Writes forwarded by primaries run on their own threads: a primary waits for its backup
  // while holding a shard lock, and two nodes backing each other up must never wait on each
  // other's busy pools.
  auto repl_pool = std::make_unique<ps::ThreadPool>(2);
  // Reads and metadata calls (large pulls, pulls that would wait for a table lock, describe,
  // list, arena info, stats) on threads of their own: writes may wait on a slow backup or peer
  // for a lease TTL, and a client refreshing its map during a failover must not queue behind them.
  auto read_pool = std::make_unique<ps::ThreadPool>(2);
  // The listener starts before the service exists (the service's arenas are registered with the
  // transport's UCX context); the UCX thread holds any early request until it is published.
  std::atomic<ps::Service*> service_ready{nullptr};
  std::atomic<ps::UcxServer*> transport_ready{nullptr};
  std::mutex pool_mu;
  bool stopping = false;  // GUARDED_BY(pool_mu): set at shutdown, before the pool drains.
  auto handler = [&](ps::Request&& req) {
    ps::UcxServer* t;
    ps::Service* svc;
    while ((t = transport_ready.load()) == nullptr || (svc = service_ready.load()) == nullptr) std::this_thread::yield();
    auto run = [svc, t](const ps::Request& r) {
      ps::Reply reply = svc->Handle(r.header, r.payload.data(), r.payload.size());
      t->Reply(r.conn_id, r.header, reply.code, std::move(reply.payload));
    };
    if (!ps::Service::IsHeavy(req.header, req.payload.size())) {
      // On the I/O thread, unless it would wait for a lock: then on a worker like heavy ones.
      if (auto reply = svc->HandleOnIoThread(req.header, req.payload.data(), req.payload.size())) {
        t->Reply(req.conn_id, req.header, reply->code, std::move(reply->payload));
        return;
      }
    }
    std::lock_guard<std::mutex> lock(pool_mu);
    if (stopping) {
      t->ReplyError(req.conn_id, req.header, Status::Unavailable("server is shutting down"));
      return;
    }
    ps::ThreadPool* target = req.header.type == static_cast<uint16_t>(wire::MsgType::kReplicate) ? repl_pool.get()
                             : ps::Service::IsRead(req.header)                                        ? read_pool.get()
                                                                                                      : pool.get();
    target->Submit([run, r = std::move(req)] { run(r); });
  };
  // A restarted daemon must get its port back at once, although connections of the previous
  // process may still sit in TIME_WAIT on it (UCX does not set SO_REUSEADDR by default).
  setenv("UCX_TCP_CM_REUSEADDR", "y", /*overwrite=*/0);
  auto server = ps::UcxServer::Start(data->host, data->port, handler);
  if (!server.ok()) return Die(server.status());
  ps::UcxServer* transport = server->get();
  transport_ready = transport;

  ps::UcxArenaAllocator rma_allocator(transport->context(), FLAGS_one_sided ? FLAGS_rma_max_bytes : 0);
  struct Remote final : ps::RemoteAccess {
    const ps::UcxServer* t;
    const ps::UcxArenaAllocator* a;
    std::vector<uint8_t> WorkerAddress() const override { return t->worker_address(); }
    std::vector<uint8_t> Rkey(const void* base) const override { return a->Rkey(base); }
  } remote;
  remote.t = transport;
  remote.a = &rma_allocator;
  // The lease word (ServiceOptions::readable_until) in a registered page of its own.
  std::optional<storage::MemoryRegion> lease_page;
  std::atomic<int64_t>* readable_until = nullptr;
  if (auto page = rma_allocator.Allocate(4096, storage::HugePages::kNever); page.ok()) {
    lease_page.emplace(std::move(page).value());
    readable_until = new (lease_page->data()) std::atomic<int64_t>(FLAGS_etcd.empty() ? INT64_MAX : 0);
  }

  ps::ServiceOptions opts;
  opts.node_id = FLAGS_node_id;
  opts.memory_budget = *budget;
  opts.max_batch_rows = FLAGS_max_batch_rows;
  opts.shard.max_batch_rows = FLAGS_max_batch_rows;
  opts.shard.arena.allocator = &rma_allocator;
  opts.remote = &remote;
  opts.readable_until = readable_until;
  // Until this daemon holds its etcd lease (and whenever it may have lost it), writes are fenced.
  std::atomic<cluster::Membership*> membership{nullptr};
  std::atomic<uint64_t> synced_registration{0};
  // etcd for answering kNodes (clients meeting a node they do not know yet); its own client,
  // called from the worker pool.
  std::mutex nodes_mu;
  std::unique_ptr<cluster::EtcdClient> nodes_etcd;
  if (!FLAGS_etcd.empty()) {
    // Writes also wait until the follower has caught up with the cluster's maps since the last
    // (re-)registration: a node whose lease expired may have been failed over meanwhile.
    opts.write_allowed = [&membership, &synced_registration] {
      cluster::Membership* m = membership.load();
      return m != nullptr && m->live() && synced_registration.load() == m->registrations();
    };
    // Reads continue while the lease may still hold (an etcd outage shorter than the TTL
    // stops no reader); past that, another node may be serving this node's shards.
    opts.read_allowed = [&membership, &synced_registration] {
      cluster::Membership* m = membership.load();
      return m != nullptr && m->lease_may_hold() && synced_registration.load() == m->registrations();
    };
    opts.cluster_nodes = [&]() -> StatusOr<std::vector<std::pair<uint32_t, std::string>>> {
      std::lock_guard<std::mutex> lock(nodes_mu);
      ENGRAM_RETURN_IF_ERROR(ConnectEtcdOnce(&nodes_etcd));
      auto list = cluster::Membership::List(*nodes_etcd, FLAGS_cluster);
      if (!list.ok()) {
        nodes_etcd.reset();  // Reconnect next time.
        return list.status();
      }
      std::vector<std::pair<uint32_t, std::string>> out;
      for (const auto& n : *list) out.emplace_back(n.node_id, n.data_address);
      return out;
    };
  }
  // Calls to other daemons (shard moves stream rows source -> destination): one client-side
  // transport, a connection per address, reconnected when it failed.
  std::unique_ptr<client::Transport> peers;
  std::mutex peers_mu;
  std::map<std::string, int> peer_conns;  // GUARDED_BY(peers_mu)
  // `cancel` (may be null): the call gives up once it turns true (the re-replicator at shutdown).
  auto peer_call_until = [&](const std::string& address, wire::MsgType type, std::vector<uint8_t> payload,
                             const std::atomic<bool>* cancel) -> StatusOr<std::vector<uint8_t>> {
    int conn = -1;
    {
      std::lock_guard<std::mutex> lock(peers_mu);
      if (!peers) {
        ENGRAM_ASSIGN_OR_RETURN(peers, client::Transport::Create(false));
      }
      auto it = peer_conns.find(address);
      if (it == peer_conns.end()) {
        ENGRAM_ASSIGN_OR_RETURN(auto hp, ParseHostPort(address, /*allow_port_zero=*/false));
        ENGRAM_ASSIGN_OR_RETURN(conn, peers->Connect(hp.host, hp.port));
        peer_conns[address] = conn;
      } else {
        conn = it->second;
        if (!peers->alive(conn)) ENGRAM_RETURN_IF_ERROR(peers->Reconnect(conn));
      }
    }
    // A replica waits one lease TTL at most; a map and a move's bookkeeping steps two (adopting
    // a map may wait for writes in flight): a peer silent that long is hung or cut off (its
    // lease, renewed at most a TTL before the call, has passed by then, so it is fenced and its
    // readers have stopped). The primary then drops that backup, a node gaining a shard
    // installs it, a move aborts. Steps that copy rows or wait for a shard's writes to drain
    // get longer.
    const int64_t ttl_ms = int64_t{FLAGS_lease_ttl_s} * 1000;
    int64_t wait_ms = 60000;
    switch (type) {
      case wire::MsgType::kReplicate: wait_ms = ttl_ms; break;
      case wire::MsgType::kAdoptMap:
      case wire::MsgType::kShardPrepare:
      case wire::MsgType::kShardTrack:
      case wire::MsgType::kShardAbort:
      case wire::MsgType::kShardAppliedRead:
      case wire::MsgType::kShardAppliedWrite: wait_ms = 2 * ttl_ms; break;
      default: break;
    }
    ENGRAM_ASSIGN_OR_RETURN(uint64_t id, peers->Send(conn, type, 0, std::move(payload)));
    ENGRAM_ASSIGN_OR_RETURN(auto reply, peers->Wait(id, client::Clock::now() + std::chrono::milliseconds(wait_ms), cancel));
    return std::move(reply.payload);
  };
  opts.peer_call = peer_call_until;
  // A silent backup's other waits end at once; new replicas to it still wait (a backup slow once,
  // e.g. a long fdatasync, loses only the shards whose writes timed out).
  opts.backup_silence = std::chrono::milliseconds(0);
  if (!FLAGS_etcd.empty()) {
    opts.node_address = [&](uint32_t node) -> StatusOr<std::string> {
      ENGRAM_ASSIGN_OR_RETURN(auto nodes, opts.cluster_nodes());
      for (const auto& [id, addr] : nodes) {
        if (id == node) return addr;
      }
      return Status::Unavailable("node " + std::to_string(node) + " holds no lease in cluster '" + FLAGS_cluster + "'");
    };
  }
  // Sends a table's new record to every live node but this one (which adopts it itself) and
  // those in `skip` (found unreachable: each would hold the sender for two lease TTLs).
  auto broadcast = [&](const wire::TableInfo& info, const std::set<uint32_t>& skip = {}) {
    auto nodes = opts.cluster_nodes();
    if (!nodes.ok()) return;
    std::vector<uint8_t> p;
    wire::Writer w(&p);
    wire::PutTableInfo(w, info);
    for (const auto& [id, addr] : *nodes) {
      if (id == FLAGS_node_id || skip.count(id)) continue;
      auto r = opts.peer_call(addr, wire::MsgType::kAdoptMap, p, nullptr);
      if (!r.ok()) LOG(WARNING) << "node " << id << " did not adopt epoch " << info.epoch << " of '" << info.schema.name
                                << "': " << r.status().ToString();
    }
  };
  std::mutex drop_mu;
  std::unique_ptr<cluster::EtcdClient> drop_etcd;
  if (!FLAGS_etcd.empty()) {
    opts.drop_backups = [&](const std::string& table, const std::vector<uint32_t>& shards) -> StatusOr<wire::TableInfo> {
      std::lock_guard<std::mutex> lock(drop_mu);
      ENGRAM_RETURN_IF_ERROR(ConnectEtcdOnce(&drop_etcd));
      cluster::ClusterState state(drop_etcd.get(), FLAGS_cluster);
      for (int attempt = 0; attempt < 5; ++attempt) {
        ENGRAM_ASSIGN_OR_RETURN(auto rec, state.GetTable(table));
        if (!rec.has_value()) return Status::NotFound("table '" + table + "' is not in the cluster's records");
        for (uint32_t s : shards) {  // Failed over meanwhile: the caller must not drop the new owner's backup.
          if (s >= rec->info.owners.size() || rec->info.owners[s] != FLAGS_node_id) return rec->info;
        }
        std::vector<uint32_t> backups = rec->info.backups;
        backups.resize(rec->info.owners.size(), cluster::kNoNode);
        for (uint32_t s : shards) backups[s] = cluster::kNoNode;
        if (backups == rec->info.backups) return rec->info;  // Already dropped (by the leader).
        auto next = state.SetMap(table, rec->info.owners, backups, rec->mod_revision);
        if (next.ok()) {
          LOG(WARNING) << "dropped unreachable backups of " << shards.size() << " shard(s) of '" << table << "' (epoch "
                       << next->epoch << ")";
          std::set<uint32_t> unreachable;
          for (uint32_t s : shards) {
            if (s < rec->info.backups.size()) unreachable.insert(rec->info.backups[s]);
          }
          broadcast(*next, unreachable);
          return next;
        }
        if (next.status().code() != Code::kAborted) return next.status();
      }
      return Status::Unavailable("table '" + table + "' keeps changing; retry");
    };
  }
  auto service_owner = std::make_unique<ps::Service>(opts);
  ps::Service& service = *service_owner;
  std::vector<std::string> log_damage;  // Damaged log segments found by recovery.
  if (!FLAGS_data_dir.empty()) {
    if (FLAGS_durability != "sync" && FLAGS_durability != "async") {
      return Die(Status::InvalidArgument("--durability must be sync or async, not '" + FLAGS_durability + "'"));
    }
    ps::DurabilityOptions d;
    d.dir = FLAGS_data_dir;
    d.sync = FLAGS_durability == "sync";
    d.sync_interval_ms = FLAGS_wal_sync_interval_ms;
    ps::RecoveryStats rs;
    const auto t0 = std::chrono::steady_clock::now();
    if (Status s = service.EnableDurability(d, &rs); !s.ok()) return Die(s.WithContext("recovering " + FLAGS_data_dir));
    LOG(INFO) << "recovered " << rs.tables << " tables from " << FLAGS_data_dir << " in "
              << std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() << " s: checkpoint "
              << rs.checkpoint << " (" << rs.checkpoint_rows << " rows), " << rs.log_records << " log records ("
              << rs.log_rows << " rows), " << rs.applied_pushes << " applied pushes remembered; durability "
              << FLAGS_durability;
    for (const auto& t : rs.torn_tails) LOG(WARNING) << "log segment ended in a torn record (a crash mid-write): " << t;
    for (const auto& c : rs.corrupt) {
      LOG(ERROR) << "log segment damaged (a bad record followed by valid ones: not a crash's torn tail): " << c
                 << "; recovery stopped there";
    }
    log_damage = rs.corrupt;
    if (!log_damage.empty() && FLAGS_etcd.empty() && !FLAGS_recover_past_corruption) {
      return Die(LogDamaged(log_damage, "no other copy of this node's tables exists"));
    }
  } else {
    LOG(WARNING) << "no --data_dir: tables live in memory only and are lost when the server stops";
  }
  service_ready = &service;
  // Periodic checkpoints bound the log (and so the restart time).
  std::mutex ckpt_mu;
  std::condition_variable ckpt_cv;
  bool ckpt_stop = false;
  std::thread checkpointer;
  if (!FLAGS_data_dir.empty() && FLAGS_checkpoint_interval_s > 0) {
    checkpointer = std::thread([&] {
      std::unique_lock<std::mutex> lock(ckpt_mu);
      while (!ckpt_cv.wait_for(lock, std::chrono::seconds(FLAGS_checkpoint_interval_s), [&] { return ckpt_stop; })) {
        lock.unlock();
        auto cs = service.Checkpoint();
        if (cs.ok()) {
          LOG(INFO) << "checkpoint " << cs->checkpoint << ": " << cs->rows << " rows, " << cs->bytes << " bytes in "
                    << cs->seconds << " s";
        } else {
          LOG(ERROR) << "periodic checkpoint failed: " << cs.status().ToString();
        }
        lock.lock();
      }
    });
  }

  ps::AdminHandlers handlers;
  handlers.metrics = [&] {
    std::string m = service.MetricsText();
    m += "# TYPE engram_connections_open gauge\nengram_connections_open " + std::to_string(transport->open_connections()) + "\n";
    m += "# TYPE engram_malformed_frames_total counter\nengram_malformed_frames_total " +
         std::to_string(transport->counters().malformed.load()) + "\n";
    m += "# TYPE engram_reply_send_errors_total counter\nengram_reply_send_errors_total " +
         std::to_string(transport->counters().send_errors.load()) + "\n";
    m += "# TYPE engram_worker_queue_depth gauge\nengram_worker_queue_depth " + std::to_string(pool->queued()) + "\n";
    if (!FLAGS_etcd.empty()) {
      cluster::Membership* mm = membership.load();
      m += "# HELP engram_lease_live 1 while this node's etcd lease is surely alive (writes allowed).\n";
      m += "# TYPE engram_lease_live gauge\nengram_lease_live " + std::string(mm && mm->live() ? "1" : "0") + "\n";
      m += "# HELP engram_is_leader 1 on the cluster's placement leader.\n";
      m += "# TYPE engram_is_leader gauge\nengram_is_leader " + std::string(mm && mm->leader() ? "1" : "0") + "\n";
    }
    m += "# HELP engram_rma_fallback_regions_total Arenas UCX could not register (served by RPC only).\n";
    m += "# TYPE engram_rma_fallback_regions_total counter\nengram_rma_fallback_regions_total " +
         std::to_string(rma_allocator.fallback_regions()) + "\n";
    return m;
  };
  handlers.status = [&] { return service.StatusJson(); };
  handlers.healthy = [&membership] {
    if (FLAGS_etcd.empty()) return true;
    cluster::Membership* m = membership.load();
    return m != nullptr && m->live();
  };
  auto http = ps::AdminHttpServer::Start(admin->host, admin->port, handlers);
  if (!http.ok()) return Die(http.status());

  LOG(INFO) << "engram-server node " << FLAGS_node_id << ": data plane on " << data->host << ":" << transport->port()
            << " (UCX active messages; endpoints with peer error handling, so UCX uses its tcp lanes), admin on http://"
            << admin->host << ":" << (*http)->port() << ", " << FLAGS_threads << " worker threads, memory budget "
            << (*budget == 0 ? std::string("unlimited") : std::to_string(*budget) + " bytes");
  std::unique_ptr<cluster::Membership> member;
  if (!FLAGS_etcd.empty()) {
    cluster::Membership::Options mo;
    mo.etcd.endpoint = FLAGS_etcd;
    mo.cluster = FLAGS_cluster;
    mo.ttl_s = FLAGS_lease_ttl_s;
    cluster::NodeInfo self;
    self.node_id = FLAGS_node_id;
    self.data_address = data->host + ":" + std::to_string(transport->port());
    self.admin_address = admin->host + ":" + std::to_string((*http)->port());
    if (Status st = RejoinBeforeRegistering(log_damage, broadcast); !st.ok()) return Die(st);
    auto joined = cluster::Membership::Join(mo, self);
    if (!joined.ok()) return Die(joined.status().WithContext("joining cluster '" + FLAGS_cluster + "' at etcd " + FLAGS_etcd));
    member = std::move(joined).value();
    membership = member.get();
    LOG(INFO) << "joined cluster '" << FLAGS_cluster << "' as node " << FLAGS_node_id << " (etcd " << FLAGS_etcd
              << ", lease " << member->lease() << ", TTL " << FLAGS_lease_ttl_s << " s)";
  }
  // Publishes the lease word ten times a second: the lease's deadline while this node is caught
  // up with the cluster's maps, else 0. (A node that stops publishing, hung or dead, lets the
  // deadline pass: its readers go to RPC, and from there to the shards' backups.)
  std::mutex lease_mu;
  std::condition_variable lease_cv;
  bool lease_stop = false;
  std::thread lease_publisher;
  if (member && readable_until != nullptr) {
    lease_publisher = std::thread([&] {
      std::unique_lock<std::mutex> lock(lease_mu);
      do {
        // The registration count around the deadline's read: a re-registration in between (its
        // fresh deadline, before the follower caught up) publishes 0, not that deadline.
        cluster::Membership* m = membership.load();
        const uint64_t reg = m != nullptr ? m->registrations() : 0;
        const int64_t deadline = m != nullptr ? m->lease_deadline_ns() : 0;
        const bool synced = m != nullptr && synced_registration.load() == reg && m->registrations() == reg;
        readable_until->store(synced ? deadline : 0, std::memory_order_release);
      } while (!lease_cv.wait_for(lock, std::chrono::milliseconds(100), [&] { return lease_stop; }));
      readable_until->store(0, std::memory_order_release);
    });
  }
  // The leader's re-replication of one shard (`plan`), run on its own thread by the follower:
  // `nodes` are the live nodes its new map goes to. Cancelled at shutdown.
  std::atomic<bool> rerep_busy{false}, rerep_stop{false};
  std::thread rerep;
  ChangedErrorLog rerep_errors;  // Used by one re-replication at a time (the next starts after a join).
  auto rereplicate = [&](const cluster::BackupPlan& plan, const std::vector<uint32_t>& nodes) {
    const std::string what = "re-replicating shard " + std::to_string(plan.shard) + " of '" + plan.table + "'";
    auto report = [&](const std::string& e) { rerep_errors.Warn(what, e); };
    std::unique_ptr<cluster::EtcdClient> etcd;
    if (Status st = ConnectEtcdOnce(&etcd); !st.ok()) return report(st.ToString());
    cluster::ClusterState state(etcd.get(), FLAGS_cluster);
    cluster::NodeCalls calls;
    calls.address = [&](uint32_t node) { return opts.node_address(node); };
    // At shutdown the copy stops waiting, except for the calls that undo its freeze (an abort)
    // or finish its flip (the new map): those are bounded by two lease TTLs.
    calls.call = [&](uint32_t node, wire::MsgType type, const std::vector<uint8_t>& p) -> StatusOr<std::vector<uint8_t>> {
      ENGRAM_ASSIGN_OR_RETURN(std::string addr, opts.node_address(node));
      const bool must_finish = type == wire::MsgType::kShardAbort || type == wire::MsgType::kAdoptMap;
      return peer_call_until(addr, type, p, must_finish ? nullptr : &rerep_stop);
    };
    calls.nodes = [&] { return nodes; };
    cluster::ShardMover mover(std::move(calls), &state);
    cluster::MoveOptions mo;
    mo.busy_wait = std::chrono::milliseconds(0);  // A shard held by a move: the next pass.
    mo.cancel = &rerep_stop;
    auto e = mover.AddBackup(plan.table, plan.shard, plan.to, mo);
    if (!e.ok()) return report(e.status().ToString());
    rerep_errors.Clear();
    LOG(WARNING) << "re-replicated shard " << plan.shard << " of '" << plan.table << "' to node " << plan.to << " (epoch "
                 << *e << ")";
  };
  // The etcd follower: tables recorded in the cluster that this node lacks are created (a node
  // added later learns them).
  std::mutex follow_mu;
  std::condition_variable follow_cv;
  bool follow_stop = false;
  std::thread follower;
  if (!FLAGS_etcd.empty()) {
    follower = std::thread([&] {
      cluster::EtcdClient::Options eo;
      eo.endpoint = FLAGS_etcd;
      eo.timeout = std::chrono::seconds(2);
      std::unique_ptr<cluster::EtcdClient> etcd;
      ChangedErrorLog errors;
      auto report = [&](const std::string& e) { errors.Warn("following etcd", e); };
      std::unique_lock<std::mutex> lock(follow_mu);
      for (bool first = true; !follow_stop; first = false) {
        if (!first) follow_cv.wait_for(lock, std::chrono::milliseconds(FLAGS_etcd_sync_ms), [&] { return follow_stop; });
        if (follow_stop) break;
        lock.unlock();
        if (!etcd) {
          auto c = cluster::EtcdClient::Connect(eo);
          if (c.ok()) etcd = std::move(c).value();
        }
        // The registration count is read before the records: a registration after this read is
        // caught up with by the next pass. A failover that took this node's shards was made
        // while its key was gone (SetMap's dead_nodes), so before that registration, and the
        // records read now show it.
        cluster::Membership* m = membership.load();
        const uint64_t reg = m ? m->registrations() : 0;
        auto tables = etcd ? cluster::ClusterState(etcd.get(), FLAGS_cluster).ListTables()
                           : StatusOr<std::vector<cluster::TableRecord>>(Status::Unavailable("etcd unreachable"));
        if (!tables.ok()) {
          report(tables.status().ToString());
          etcd.reset();
        } else {
          bool caught_up = true;
          for (const auto& rec : *tables) {
            bool created = false;
            if (Status st = service.FollowRecord(rec.info, &created); !st.ok()) {
              report("table '" + rec.info.schema.name + "': " + st.ToString());
            } else if (created) {
              LOG(INFO) << "table '" << rec.info.schema.name << "' created from the cluster's record (epoch "
                        << rec.info.epoch << ")";
            }
            // Every newer record: a node that missed a broadcast (it was slow, or the sender
            // skipped it as unreachable, or died first) catches up within a pass; after a
            // (re-)registration this must be done before taking writes again (its shards may have
            // been promoted elsewhere while it was away).
            if (service.TableEpoch(rec.info.schema.name) < rec.info.epoch) {
              if (Status st = service.AdoptRecord(rec.info); !st.ok()) {
                caught_up = false;
                report("catching up with '" + rec.info.schema.name + "': " + st.ToString());
              }
            }
          }
          if (caught_up && m != nullptr) synced_registration = reg;
          // The leader fails shards over: a primary without a lease is replaced by its backup, a
          // backup without a lease is dropped. The new record goes to every live node.
          if (m != nullptr && m->leader()) {
            auto live = cluster::Membership::List(*etcd, FLAGS_cluster);
            std::set<uint32_t> up;
            if (live.ok()) {
              for (const auto& n : *live) up.insert(n.node_id);
            } else {
              report("listing the cluster's nodes: " + live.status().ToString());
            }
            for (const auto& rec : live.ok() ? *tables : std::vector<cluster::TableRecord>{}) {
              auto plan = cluster::PlanFailover(rec.info, up);
              if (!plan) continue;
              // Only while those nodes are still unregistered: one that registered again since
              // the list was read has caught up with the record and serves its shards.
              auto next = cluster::ClusterState(etcd.get(), FLAGS_cluster)
                              .SetMap(rec.info.schema.name, plan->owners, plan->backups, rec.mod_revision, plan->dead);
              if (!next.ok()) {
                report("failing over '" + rec.info.schema.name + "': " + next.status().ToString());
                continue;
              }
              LOG(WARNING) << "failover of '" << rec.info.schema.name << "': epoch " << next->epoch;
              if (Status st = service.AdoptRecord(*next); !st.ok()) report("adopting failover: " + st.ToString());
              broadcast(*next);
            }
            // Re-replication: one shard at a time gets a backup again on the live node holding
            // the fewest (a copy like a move; the primary keeps serving). On its own thread: a
            // copy takes as long as the shard's rows take to send, and a destination that hangs
            // holds it until its calls time out; the next failover must not wait for either.
            if (live.ok() && up.size() >= 2 && !rerep_busy.load()) {
              if (rerep.joinable()) rerep.join();
              auto fresh = cluster::ClusterState(etcd.get(), FLAGS_cluster).ListTables();
              auto plan = fresh.ok() ? cluster::NextBackup(*fresh, up) : std::nullopt;
              if (plan) {
                rerep_busy = true;
                rerep = std::thread([&, plan = *plan, nodes = std::vector<uint32_t>(up.begin(), up.end())] {
                  rereplicate(plan, nodes);
                  rerep_busy = false;
                });
              }
            }
          }
        }
        lock.lock();
      }
    });
  }
  if (!FLAGS_port_file.empty()) {
    const std::string tmp = FLAGS_port_file + ".tmp";
    std::ofstream(tmp) << transport->port() << " " << (*http)->port() << "\n";
    std::rename(tmp.c_str(), FLAGS_port_file.c_str());
  }

  int sig = 0;
  sigwait(&sigs, &sig);
  LOG(INFO) << "signal " << sig << ": shutting down";
  membership = nullptr;  // Fence first, then leave: no write is accepted after the lease goes.
  rerep_stop = true;     // A copy in progress aborts before its flip.
  {
    std::lock_guard<std::mutex> lock(follow_mu);
    follow_stop = true;
  }
  follow_cv.notify_all();
  if (follower.joinable()) follower.join();
  if (rerep.joinable()) rerep.join();
  {
    std::lock_guard<std::mutex> lock(lease_mu);
    lease_stop = true;
  }
  lease_cv.notify_all();
  if (lease_publisher.joinable()) lease_publisher.join();
  member.reset();
  http->reset();
  {
    std::lock_guard<std::mutex> lock(pool_mu);
    stopping = true;  // Heavy requests from now on are refused with Unavailable (retry elsewhere).
  }
  {
    std::lock_guard<std::mutex> lock(ckpt_mu);
    ckpt_stop = true;
  }
  ckpt_cv.notify_all();
  if (checkpointer.joinable()) checkpointer.join();
  pool.reset();     // Finishes the requests already accepted; their replies still go out.
  repl_pool.reset();
  read_pool.reset();
  (*server)->Stop();      // Then stops the data plane: no handler runs after this.
  service_owner.reset();  // Tables (and their registered arenas) go before the UCX context.
  lease_page.reset();
  server->reset();
  LOG(INFO) << "stopped";
  return 0;
}
