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
  int timeout_ms = 10000;
  bool json = false;
  std::string name, table, spec, dtype, optimizer, init, rows_list, values, grads;
  uint64_t rows = 0;
  uint32_t dim = 0;
  uint32_t shards = 16;
  double lr = 0.01, init_scale = 0.02;
  uint64_t seed = 0;
};

// create-table, drop-table, list, describe, stats, get, put, push.
int RunTableCommand(const std::string& cmd, const CtlFlags& flags);

// engramctl hash --spec SPEC.json --tokens TOKENS.json
int RunHash(const std::string& spec_path, const std::string& tokens_path);

}  // namespace engram::ctl

#endif  // ENGRAM_CLUSTER_ENGRAMCTL_COMMANDS_H_
