// engramctl subcommands. Each takes its arguments from gflags (parsed in main) and returns the
// process exit code; results go to stdout, errors to stderr.
#ifndef ENGRAM_CLUSTER_ENGRAMCTL_COMMANDS_H_
#define ENGRAM_CLUSTER_ENGRAMCTL_COMMANDS_H_

#include <cstdint>
#include <memory>
#include <string>

#include "engram/status.h"

namespace engram::ctl {

// The flags the table commands read (gflags live in main.cc only).
struct CtlFlags {
  std::string servers;
  std::string etcd, cluster = "default";  // With --etcd and no --servers: the cluster's live daemons.
  int timeout_ms = 10000;
  bool json = false;
  std::string name, table, spec, dtype, optimizer, init, rows_list, values, grads;
  std::string safetensors, tensor, scale_tensor;
  uint64_t rows = 0;
  uint32_t dim = 0;
  uint32_t shards = 16;
  bool shards_given = false;  // --shards on the command line; else small tables get fewer.
  double lr = 0.01, init_scale = 0.02;
  uint64_t seed = 0;
  uint64_t dram_bytes = 0;
  int replicas = 0;  // 0: 2 with --etcd and >= 2 nodes, else 1.
  int64_t shard = -1, node = -1, to = -1;  // move-shard, drain-node, add-node.
};

// create-table, drop-table, list, describe, stats, get, put, push, import, export.
int RunTableCommand(const std::string& cmd, const CtlFlags& flags);

// engramctl status --etcd=HOST:PORT [--cluster=NAME]: the live daemons of a cluster.
int RunStatus(const std::string& etcd, const std::string& cluster, bool json, int timeout_ms);

// engramctl hash --spec SPEC.json --tokens TOKENS.json
int RunHash(const std::string& spec_path, const std::string& tokens_path);

}  // namespace engram::ctl

namespace engram::client {
class Client;
}
namespace engram::cluster {
class EtcdClient;
}
namespace engram::ctl {
// Prints "engramctl CMD: <status>" to stderr; returns exit code 1.
int Fail(const std::string& cmd, const Status& s);
// The client of --servers (or of the live daemons of --etcd); long_running: one attempt, hours
// of deadline.
StatusOr<std::unique_ptr<client::Client>> Open(const CtlFlags& f, bool long_running);
StatusOr<std::unique_ptr<cluster::EtcdClient>> OpenEtcd(const CtlFlags& f);
// move-shard, drain-node, add-node, rebalance (cluster/shard_mover.h), with a progress bar on
// stderr; Ctrl-C aborts the move in progress before its flip (completed moves stay).
int RunShardCommand(const std::string& cmd, const CtlFlags& flags);
// import / export between a table and a safetensors file, streamed in bounded memory.
int RunImportExport(const std::string& cmd, const CtlFlags& flags, client::Client& client);
}  // namespace engram::ctl

#endif  // ENGRAM_CLUSTER_ENGRAMCTL_COMMANDS_H_
