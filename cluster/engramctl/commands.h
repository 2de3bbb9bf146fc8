// engramctl subcommands. Each takes its arguments from gflags (parsed in main) and returns the
// process exit code; results go to stdout, errors to stderr.
#ifndef ENGRAM_CLUSTER_ENGRAMCTL_COMMANDS_H_
#define ENGRAM_CLUSTER_ENGRAMCTL_COMMANDS_H_

#include <string>

namespace engram::ctl {

// engramctl hash --spec SPEC.json --tokens TOKENS.json
int RunHash(const std::string& spec_path, const std::string& tokens_path);

}  // namespace engram::ctl

#endif  // ENGRAM_CLUSTER_ENGRAMCTL_COMMANDS_H_
