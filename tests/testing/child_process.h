// Starting a daemon for a test: fork + exec with its stdout and stderr appended to a log file,
// killed (SIGKILL) if the test process dies first, so no orphan keeps ctest's pipes open.
#ifndef ENGRAM_TESTS_TESTING_CHILD_PROCESS_H_
#define ENGRAM_TESTS_TESTING_CHILD_PROCESS_H_

#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

namespace engram::testing {

// Returns the child's pid (-1 if fork failed); args[0] is the binary's path.
inline pid_t SpawnChild(std::vector<std::string> args, const std::string& log) {
  const pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);  // Never outlive a test that crashed.
    if (std::freopen(log.c_str(), "a", stderr) == nullptr || std::freopen(log.c_str(), "a", stdout) == nullptr) {
      _exit(126);
    }
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  return pid;
}

}  // namespace engram::testing

#endif  // ENGRAM_TESTS_TESTING_CHILD_PROCESS_H_
