// engramctl subcommands. Each takes its arguments from gflags (parsed in main) and returns the
// process exit code; results go to stdout, errors to stderr.
#ifndef ENGRAM_CLUSTER_ENGRAMCTL_COMMANDS_H_
#define ENGRAM_CLUSTER_ENGRAMCTL_COMMANDS_H_

#include <cstdint>
#include <string>

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
namespace engram::ctl {
// import / export between a table and a safetensors file, streamed in bounded memory.
int RunImportExport(const std::string& cmd, const CtlFlags& flags, client::Client& client);
}  // namespace engram::ctl

#endif  // ENGRAM_CLUSTER_ENGRAMCTL_COMMANDS_H_
