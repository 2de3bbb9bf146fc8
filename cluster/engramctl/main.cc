// engramctl: the administration tool. `engramctl <command> [--flags]`.
#include <cstring>
#include <iostream>
#include <string>

#include <gflags/gflags.h>

#include "cluster/engramctl/commands.h"

DEFINE_string(spec, "", "Engram spec JSON (reference field names), for hash");
DEFINE_string(tokens, "", "JSON [B][T] array of token ids, for hash");

namespace {

constexpr const char* kUsage =
    "usage: engramctl <command> [flags]\n"
    "commands:\n"
    "  hash --spec SPEC.json --tokens TOKENS.json\n"
    "      print {\"<layer>\": [B][T][(max_ngram_size-1)*n_head_per_ngram] global row ids}\n";

}  // namespace

int main(int argc, char** argv) {
  gflags::SetUsageMessage(kUsage);
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0 ||
      std::strcmp(argv[1], "help") == 0) {
    std::cout << kUsage;
    return argc < 2 ? 2 : 0;
  }
  const std::string command = argv[1];
  // Let gflags see the flags after the command.
  argv[1] = argv[0];
  int sub_argc = argc - 1;
  char** sub_argv = argv + 1;
  gflags::ParseCommandLineFlags(&sub_argc, &sub_argv, true);
  if (sub_argc > 1) {
    std::cerr << "engramctl " << command << ": unexpected argument '" << sub_argv[1] << "'\n";
    return 2;
  }
  if (command == "hash") return engram::ctl::RunHash(FLAGS_spec, FLAGS_tokens);
  std::cerr << "engramctl: unknown command '" << command << "'\n" << kUsage;
  return 2;
}
