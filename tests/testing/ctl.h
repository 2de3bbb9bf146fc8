// Runs the engramctl binary of this build (ENGRAMCTL_PATH) for tests.
#ifndef ENGRAM_TESTS_TESTING_CTL_H_
#define ENGRAM_TESTS_TESTING_CTL_H_

#include <sys/wait.h>

#include <cstdio>
#include <string>
#include <utility>

namespace engram::testing {

// Runs `engramctl ARGS` (stderr discarded); returns its exit code and stdout.
inline std::pair<int, std::string> RunCtl(const std::string& args) {
  FILE* f = popen((std::string(ENGRAMCTL_PATH) + " " + args + " 2>/dev/null").c_str(), "r");
  std::string out;
  char buf[4096];
  for (size_t n; f != nullptr && (n = fread(buf, 1, sizeof(buf), f)) > 0;) out.append(buf, n);
  const int status = f ? pclose(f) : -1;
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

}  // namespace engram::testing

#endif  // ENGRAM_TESTS_TESTING_CTL_H_
